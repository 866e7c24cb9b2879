"""Bad input through the real pipeline: no good sample is lost, every bad one is logged with its reason.

The shard set (``shardkit.write_bad_input_set``) mixes good samples with every kind of broken
sample (corrupt/truncated images, undecodable/empty audio, non-UTF-8 text, missing/bad labels,
unknown members, a key split across the shard) and every kind of broken shard (cut mid-member,
0 bytes, an empty tar, random bytes, a brace-range name that does not exist). Last, the quarantine ledger
actor is killed mid-stream: the run must fail naming it, never finish with wrong counts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import ray
from shardkit import ShardSet, good_sample, read_tar_samples, write_bad_input_set, write_samples

from mm_ray.config.load import load_config
from mm_ray.data.captions import obtain_tokenizer
from mm_ray.data.ledger import ErrorBudgetExceeded, check_error_budget
from mm_ray.data.pipeline import Ingest
from mm_ray.quarantine import Reason

from .conftest import SMALL, Run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> ShardSet:
    return write_bad_input_set(tmp_path_factory.mktemp("bad_input"))


@pytest.fixture(scope="module")
def lenient(run_ingest, case: ShardSet, tmp_path_factory) -> tuple[Run, dict[str, Any], list[dict]]:
    """The whole set streamed with ``data.error_budget=1.0``: the run, its final summary, its log."""
    run = run_ingest(case.specs, "data.error_budget=1.0")
    log = tmp_path_factory.mktemp("bad_input_log") / "quarantine.jsonl"
    summary = run.ingest.finish(quarantine_log=log)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return run, summary, records


def names(paths: list[str]) -> list[str]:
    return sorted(Path(p).name for p in paths)


def test_exactly_the_good_samples_come_out(lenient, case: ShardSet) -> None:
    run, _, _ = lenient
    assert len(run.keys) == len(set(run.keys))
    assert set(run.keys) == set(case.good)
    assert dict(zip(run.keys, run.columns["label"].tolist(), strict=True)) == case.good


def test_quarantine_log_names_every_bad_sample_and_shard_with_its_reason(lenient, case: ShardSet) -> None:
    _, _, records = lenient
    assert {(Path(r["shard"]).name, r["key"], r["reason"]) for r in records} == case.expected
    assert len(records) == len(case.expected)
    assert all(r["detail"] for r in records)  # an explanation for whoever reads the log
    missing = next(r for r in records if Path(r["shard"]).name == "part-000002.tar")
    assert "part-000002.tar" in missing["detail"]


def test_summary_counts_reasons_and_lists_bad_shards_by_name(lenient, case: ShardSet) -> None:
    run, summary, _ = lenient
    assert run.ingest.summary()["quarantine_reasons"] == case.sample_reasons
    assert summary["quarantine_reasons"] == case.sample_reasons
    assert summary["samples_quarantined"] == sum(case.sample_reasons.values())
    assert summary["members_ignored"] == {Reason.UNKNOWN_EXTENSION.value: 1}
    assert names(summary["shards_unreadable"]) == case.shards_with(Reason.UNREADABLE_SHARD)
    assert names(summary["shards_truncated"]) == case.shards_with(Reason.TRUNCATED_SHARD)
    assert names(summary["shards_empty"]) == case.shards_with(Reason.EMPTY_SHARD)
    assert names(summary["shards_unreadable"]) == ["garbage-000000.tar", "part-000002.tar"]
    assert names(summary["shards_truncated"]) == ["truncated-000000.tar"]


def test_sample_counts_add_up_to_the_rows_delivered(lenient, case: ShardSet) -> None:
    """read = delivered + quarantined, so ``samples_ok`` (and the cache manifest) is the real row count.

    A sample cut off by a truncated shard and the late fragment of a split key are quarantined
    samples too, so they must be counted as read.
    """
    run, summary, _ = lenient
    assert summary["samples_read"] == len(case.good) + summary["samples_quarantined"]
    assert summary["samples_ok"] == len(run.keys)


def test_default_error_budget_fails_naming_the_setting_and_the_counts(lenient, case: ShardSet) -> None:
    _, summary, _ = lenient
    assert summary["samples_quarantined"] == sum(case.sample_reasons.values())
    with pytest.raises(ErrorBudgetExceeded) as err:
        check_error_budget(summary, 0.05)
    message = str(err.value)
    assert "data.error_budget=5.0%" in message
    assert f"{summary['samples_quarantined']} of {summary['samples_read']} samples" in message
    for reason, count in case.sample_reasons.items():
        assert f"{reason}={count}" in message


def test_the_stream_stops_as_soon_as_the_budget_is_certainly_exceeded(run_ingest, case: ShardSet) -> None:
    # The default 5% budget: once every shard was read the ledger knows the fraction can only grow, and
    # the stream itself fails (inside a read task or pool), not a check after the last row.
    with pytest.raises(ErrorBudgetExceeded) as err:
        run_ingest(case.specs)
    message = str(err.value)
    assert "data.error_budget=5.0%" in message
    counts = re.search(r"at least (\d+) of (\d+) samples", message)
    assert counts, message
    bad, read = map(int, counts.groups())
    # Every sample in the set was read; the decoders may not have reached every bad one yet.
    assert read == len(case.good) + sum(case.sample_reasons.values())
    assert read * 0.05 < bad <= sum(case.sample_reasons.values())


def test_fail_on_unreadable_shard_names_the_shard(run_ingest, case: ShardSet) -> None:
    brace_range = case.specs[1]  # part-000000 and part-000001 exist, part-000002 does not
    run = run_ingest([brace_range], "data.fail_on_unreadable_shard=true")
    assert sorted(run.keys) == sorted(k for k in case.good if k.startswith("part"))
    with pytest.raises(RuntimeError, match=r"data\.fail_on_unreadable_shard=true.*part-000002\.tar"):
        run.ingest.finish()


SHARDS, PER_SHARD = 8, 12


def _shards(root: Path) -> list[Path]:
    paths = []
    for s in range(SHARDS):
        samples = {f"s{s}k{i:02d}": good_sample(s * PER_SHARD + i) for i in range(PER_SHARD)}
        samples[f"s{s}k03"]["jpg"] = b"\xff\xd8 not a jpeg"  # one bad sample per shard: the stages report
        paths.append(write_samples(root / f"shard-{s:02d}.tar", samples))
    return paths


def test_a_killed_ledger_fails_the_run_naming_it_or_counts_stay_right(tmp_path: Path) -> None:
    """The quarantine ledger actor killed mid-ingest: the run fails naming it, or its counts are right.

    Never silently wrong counts: a ledger restarted empty would report only what arrived after the restart
    (``samples_ok`` sizes the LR schedule and the cache manifest). The expected counts come from reading the
    same tar files with ``tarfile`` alone (``shardkit.read_tar_samples``).
    """
    paths = _shards(tmp_path)
    expected_keys = {k for p in paths for k in read_tar_samples(p)}
    bad = {f"s{s}k03" for s in range(SHARDS)}
    cfg = load_config(None, [*SMALL, "data.error_budget=1.0", "data.read_block_rows=4"])
    specs = [str(tmp_path)]
    ingest = Ingest.from_config(cfg, specs, obtain_tokenizer(cfg, specs))
    keys: list[str] = []
    try:
        for i, batch in enumerate(ingest.dataset.iter_batches(batch_size=4, batch_format="numpy")):
            keys += [str(k) for k in batch["__key__"]]
            if i == 0:
                # As a crashed node would: Ray may restart it if the actor allows restarts.
                ray.kill(ingest.ledger, no_restart=False)
        summary = ingest.finish()
    except Exception as err:  # Ray Data wraps a stage's error in its own types
        assert "quarantine ledger actor (QuarantineLedger) died" in str(err)
        return
    # The run recovered: then its counts must be the true ones.
    assert sorted(keys) == sorted(expected_keys - bad)
    assert summary["samples_read"] == len(expected_keys)
    assert summary["samples_quarantined"] == len(bad)

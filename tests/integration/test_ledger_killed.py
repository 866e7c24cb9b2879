"""The quarantine ledger actor killed mid-ingest: the run fails naming it, or its counts are right.

Never silently wrong counts: a ledger restarted empty would report only what arrived after the restart,
and ``samples_ok`` sizes the LR schedule and the cache manifest. The expected counts come from reading
the same tar files with ``tarfile`` alone (``shardkit.read_tar_samples``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from shardkit import good_sample, read_tar_samples, write_samples

from mm_ray.config.load import load_config
from mm_ray.data.captions import obtain_tokenizer
from mm_ray.data.pipeline import Ingest

from .conftest import SMALL

pytestmark = pytest.mark.integration

SHARDS, PER_SHARD = 8, 12


def _shards(root: Path) -> list[Path]:
    paths = []
    for s in range(SHARDS):
        samples = {f"s{s}k{i:02d}": good_sample(s * PER_SHARD + i) for i in range(PER_SHARD)}
        samples[f"s{s}k03"]["jpg"] = b"\xff\xd8 not a jpeg"  # one bad sample per shard: the stages report
        paths.append(write_samples(root / f"shard-{s:02d}.tar", samples))
    return paths


def test_a_killed_ledger_fails_the_run_naming_it_or_counts_stay_right(tmp_path: Path) -> None:
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

"""Quarantine ledger counting and the ingest resource plan (no Ray)."""

from __future__ import annotations

import dataclasses

import pytest

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import PoolsConfig
from mm_ray.data.ledger import ErrorBudgetExceeded, QuarantineLedger, check_error_budget, write_quarantine_log
from mm_ray.data.resources import plan_ingest
from mm_ray.quarantine import QuarantineRecord, Reason


def _rec(shard: str, key: str, reason: Reason) -> dict:
    return QuarantineRecord(shard, key, reason, "x").to_json()


def test_ledger_counts_by_level_and_deduplicates(tmp_path) -> None:
    ledger = QuarantineLedger()
    ledger.add([_rec("s1", "k1", Reason.CORRUPT_IMAGE), _rec("s1", "k2", Reason.BAD_LABEL)])
    ledger.add([_rec("s1", "k1", Reason.CORRUPT_IMAGE)])  # a retried task reports again
    ledger.add([_rec("s2", "", Reason.UNREADABLE_SHARD), _rec("s1", "k3", Reason.UNKNOWN_EXTENSION)])
    ledger.shard_progress("s1", 10)
    ledger.shard_progress("s1", 8)  # an older progress report never lowers the count
    ledger.shard_progress("s3", 5, done=True)
    s = ledger.summary()
    assert s["samples_read"] == 15
    assert s["samples_quarantined"] == 2
    assert s["quarantine_reasons"] == {"bad_label": 1, "corrupt_image": 1}
    assert s["members_ignored"] == {"unknown_extension": 1}
    assert s["shards_unreadable"] == ["s2"]
    assert s["shards_done"] == 1
    log = tmp_path / "q.jsonl"
    assert write_quarantine_log(ledger.records(), log) == 4
    assert '"key": "k2"' in log.read_text()


def test_error_budget() -> None:
    summary = {"samples_read": 100, "samples_quarantined": 6, "quarantine_reasons": {"corrupt_image": 6}}
    with pytest.raises(
        ErrorBudgetExceeded, match=r"6 of 100 samples \(6\.0%\).*data\.error_budget=5\.0%.*corrupt_image=6"
    ):
        check_error_budget(summary, 0.05, log_hint="q.jsonl")
    check_error_budget(summary, 0.06)  # exactly at budget passes
    check_error_budget(summary, 0.05, min_samples=1000)  # too early to judge mid-stream


def test_ledger_says_the_budget_is_exceeded_only_once_every_shard_was_read() -> None:
    ledger = QuarantineLedger(error_budget=0.25, shards_total=2)
    bad = [_rec("s1", f"k{i}", Reason.CORRUPT_IMAGE) for i in range(3)]
    assert ledger.add(bad) is None
    assert ledger.shard_progress("s1", 4, done=True) is None  # 3 of 4 bad, but s2 may hold many good samples
    assert ledger.shard_progress("s2", 6) is None  # s2 still being read
    # Both read: 3 of 10 bad > 25% can only get worse now (members and shard records do not count).
    ledger.add([_rec("s2", "m", Reason.UNKNOWN_EXTENSION), _rec("s2", "", Reason.TRUNCATED_SHARD)])
    verdict = ledger.shard_progress("s2", 6, done=True)
    assert verdict is not None and "at least 3 of 10 samples (30.0%)" in verdict
    assert "data.error_budget=25.0%" in verdict
    # At or under the budget once everything was read: no verdict (the final check decides).
    calm = QuarantineLedger(error_budget=0.3, shards_total=1)
    calm.add(bad)
    assert calm.shard_progress("s1", 10, done=True) is None
    # Without a budget (plain use) the ledger never judges.
    plain = QuarantineLedger()
    plain.add(bad)
    assert plain.shard_progress("s1", 3, done=True) is None


def _pools(**changes) -> dict:
    cfg = PoolsConfig()
    pools = {m: dataclasses.asdict(getattr(cfg, m)) for m in ("text", "image", "audio")}
    for key, value in changes.items():
        modality, field = key.split("__")
        pools[modality][field] = value
    return pools


def test_default_plan_fits_two_cpus_with_room_for_reads() -> None:
    plan = plan_ingest(_pools(), total_cpus=2, read_num_cpus=0.25, read_slots=2)
    assert plan.pools["image"].min_size >= 2 and plan.pools["audio"].min_size >= 2
    assert plan.pool_cpus + 2 * 0.25 <= 2


def test_plan_scales_with_cluster() -> None:
    small = plan_ingest(_pools(), total_cpus=2)
    big = plan_ingest(_pools(), total_cpus=32)
    assert big.pools["image"].max_size > 4 * small.pools["image"].max_size
    assert big.pool_cpus <= 32 - 0.5


def test_plan_reserves_cpus_for_training() -> None:
    plan = plan_ingest(_pools(), total_cpus=8, reserved_cpus=4)
    assert plan.pool_cpus <= 8 - 4 - 0.5


def test_oversized_pool_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"deadlock.*pools\.image\.max_size or pools\.image\.num_cpus"):
        plan_ingest(_pools(image__num_cpus=1.0, image__min_size=2), total_cpus=2)


def test_gpu_pool_without_gpus_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"pools\.image\.num_gpus"):
        plan_ingest(_pools(image__num_gpus=1.0), total_cpus=4, total_gpus=0)


def test_gpu_pool_sized_by_gpus() -> None:
    plan = plan_ingest(_pools(image__num_gpus=0.5), total_cpus=16, total_gpus=1)
    assert plan.pools["image"].max_size == 2


def test_no_cpu_left_for_pools() -> None:
    with pytest.raises(ConfigError, match="no CPU left"):
        plan_ingest(_pools(), total_cpus=1, reserved_cpus=1)

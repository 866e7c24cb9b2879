"""Quarantine ledger counting and the ingest resource plan (no Ray)."""

from __future__ import annotations

import dataclasses

import pytest

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import PoolConfig, PoolsConfig
from mm_ray.data.ledger import ErrorBudgetExceeded, QuarantineLedger, check_error_budget, write_quarantine_log
from mm_ray.data.resources import plan_ingest
from mm_ray.modalities import BUILTIN
from mm_ray.placement import Node, check_workers
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


def _pools(**changes) -> dict[str, PoolConfig]:
    cfg = PoolsConfig()
    pools = {m: getattr(cfg, m) for m in ("text", "image", "audio")}
    for key, value in changes.items():
        modality, field = key.split("__")
        pools[modality] = dataclasses.replace(pools[modality], **{field: value})
    return pools


SHARES = {m: BUILTIN[m].cost_share for m in ("text", "image", "audio")}


def test_default_plan_fits_two_cpus_with_room_for_reads() -> None:
    plan = plan_ingest(_pools(), total_cpus=2, read_num_cpus=0.25, read_slots=2, shares=SHARES)
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


# ------------------------------------------------------------------------------- heterogeneous clusters

CPU_NODE = Node("cpu", {"CPU": 16.0, "preprocess": 1.0})
GPU_NODE = Node("gpu", {"CPU": 8.0, "GPU": 1.0, "train_gpu": 1.0})
HEAD = Node("head", {"CPU": 0.0})


def _fused(**changes) -> dict[str, PoolConfig]:
    return {"fused": dataclasses.replace(PoolsConfig().fused, **changes)}


def test_a_pinned_pool_is_sized_from_its_nodes_cpus_only() -> None:
    nodes = [HEAD, CPU_NODE, GPU_NODE]
    pinned = plan_ingest(_fused(resources={"preprocess": 0.001}), nodes=nodes, read_slots=0)
    anywhere = plan_ingest(_fused(), nodes=nodes, read_slots=0)
    # 16 CPUs / 0.75 per actor = 21 actors on the CPU node; unpinned the pool may also use the GPU node's 8.
    assert pinned.pools["fused"].max_size == 21
    assert anywhere.pools["fused"].max_size == 32
    assert pinned.pools["fused"].resources == {"preprocess": 0.001}


def test_train_cpus_are_kept_only_where_the_workers_can_run() -> None:
    nodes = [HEAD, CPU_NODE, GPU_NODE]
    pool = _fused(resources={"preprocess": 0.001})
    on_gpu_nodes = plan_ingest(
        pool, nodes=nodes, read_slots=0, train_cpus=6, train_resources={"train_gpu": 0.001}
    )
    anywhere = plan_ingest(pool, nodes=nodes, read_slots=0, train_cpus=6)
    assert on_gpu_nodes.pools["fused"].max_size == 21  # the workers take nothing from the CPU node
    assert anywhere.pools["fused"].max_size == 13  # (16 - 6) / 0.75: they might land there


def test_pools_on_overlapping_nodes_never_count_the_same_cpus() -> None:
    nodes = [CPU_NODE, GPU_NODE]
    pools = {
        "fused": dataclasses.replace(PoolsConfig().fused, resources={"preprocess": 0.001}),
        "image": dataclasses.replace(PoolsConfig().image, num_cpus=1.0),
    }
    plan = plan_ingest(pools, nodes=nodes, read_slots=0, shares={"fused": 0.5, "image": 0.5})
    # The pinned pool is planned first on its 16 CPUs; the unpinned one gets what is left of all 24.
    held_pinned = plan.pools["fused"].max_size * 0.75
    assert plan.pools["image"].max_size * 1.0 + held_pinned <= 24


def test_a_resource_no_node_declares_is_refused_naming_the_field() -> None:
    nodes = [HEAD, CPU_NODE, GPU_NODE]
    with pytest.raises(ConfigError, match=r"pools\.fused\.resources: no node .* 'ingest_node'.*preprocess"):
        plan_ingest(_fused(resources={"ingest_node": 0.01}), nodes=nodes, read_slots=0)
    with pytest.raises(ConfigError, match=r"train\.worker_resources: no node .* 'gpu_node'"):
        plan_ingest(_fused(), nodes=nodes, read_slots=0, train_cpus=1, train_resources={"gpu_node": 1})
    with pytest.raises(ConfigError, match=r"pools\.fused\.resources: 'CPU' is Ray's own"):
        plan_ingest(_fused(resources={"CPU": 1}), nodes=nodes, read_slots=0)


def test_a_pool_larger_than_its_custom_resources_hold_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"pools\.fused\.resources: 4 actors .* fit the 2"):
        plan_ingest(
            _fused(resources={"preprocess": 0.5}, max_size=4, min_size=1), nodes=[CPU_NODE], read_slots=0
        )
    sized = plan_ingest(_fused(resources={"preprocess": 0.5}), nodes=[CPU_NODE], read_slots=0)
    assert sized.pools["fused"].max_size == 2


def test_two_cpu_laptop_plan_is_unchanged_by_placement() -> None:
    laptop = [Node("laptop", {"CPU": 2.0})]
    by_nodes = plan_ingest(_pools(), nodes=laptop, train_cpus=0.5)
    by_totals = plan_ingest(_pools(), total_cpus=2, reserved_cpus=0.5)
    assert by_nodes.pools == by_totals.pools
    assert by_nodes.pool_cpus + 2 * 0.25 + 0.5 <= 2


def test_workers_that_fit_no_node_are_refused_naming_the_field() -> None:
    nodes = [CPU_NODE, GPU_NODE]
    check_workers(nodes, {"train_gpu": 0.001}, cpus=4, gpus=1, key="train.worker_resources")
    with pytest.raises(ConfigError, match=r"train\.worker_resources: .* needs 12 CPUs"):
        check_workers(nodes, {"train_gpu": 0.001}, cpus=12, gpus=1, key="train.worker_resources")

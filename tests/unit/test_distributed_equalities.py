"""Two gloo processes (no Ray), one spawn for the module: what the large-run options must keep equal.

- gradient accumulation: 4 micro-batches of 8 per worker give the parameters of one batch of 32 per worker
  (DDP, gradients synced on the last micro-batch only);
- FSDP2 (``shard_fsdp``: each encoder a unit, then the whole model) ends with DDP's parameters after k steps,
  with and without accumulation, while holding about half of them on each worker;
- its checkpoint (``full_states``) loads into a model in one process, and a one-process state loads into it;
- distributed validation: each rank scores its part of an odd-sized set, the sums all-reduced: every metric
  (per subset, per class) equals one process scoring the whole set, for DDP and for FSDP scored in lockstep.

Expected values come from the other path (DDP, one process), never from the code under test's own formula.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mm_ray.train.loop import to_device, train_epoch
from mm_ray.train.mergeable import all_reduce_metrics, lockstep
from mm_ray.train.metrics import DEFAULT_REGISTRY, ClassMetrics, evaluate_subsets, score_subsets
from mm_ray.train.parallel import full_states, load_full_states, local_param_fraction, shard_fsdp
from tests.gloo_group import run_on_gloo
from tests.tiny_fusion import batches, rows, tiny_model

SUBSETS = DEFAULT_REGISTRY.subsets()

WORLD = 2
VAL_ROWS = 37  # odd: the parts differ in size, and the last batch is short
TOLERANCE = 2e-4  # see test_grad_accum.py: AdamW magnifies summation-order differences


def _train(model, rank: int, micro: int, accum: int, wrap) -> dict[str, torch.Tensor]:
    wrapped = wrap(model)
    optimizer = torch.optim.AdamW(wrapped.parameters(), lr=3e-3)
    # Each rank its own 64 rows, as from a split dataset.
    data = batches(rows(128, seed=3), micro, start=rank * 64, stop=(rank + 1) * 64)
    train_epoch(wrapped, data, optimizer, device="cpu", grad_clip=0.5, grad_accum_steps=accum)
    return full_states(wrapped, optimizer)


REDUCTIONS: list[int] = []
"""Gradient buckets DDP all-reduced in this process (counted by a comm hook)."""


def _ddp(model):
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    def counting(state, bucket):
        REDUCTIONS.append(1)
        return allreduce_hook(state, bucket)

    wrapped = torch.nn.parallel.DistributedDataParallel(model)
    wrapped.register_comm_hook(None, counting)
    return wrapped


def _counted(run) -> tuple[dict, int]:
    REDUCTIONS.clear()
    return run(), len(REDUCTIONS)


def _scores(model, parts, per_class, *, in_step: bool) -> dict:
    meters = score_subsets(model, lockstep(parts, "cpu") if in_step else parts, SUBSETS, per_class=per_class)
    all_reduce_metrics([*meters.values(), per_class])
    return {subset: meter.result() for subset, meter in meters.items()}


def _worker(rank: int) -> dict:
    results: dict = {}
    results["ddp_32"], results["reductions_32"] = _counted(
        lambda: _train(tiny_model(), rank, 32, 1, _ddp)["model"]
    )
    results["ddp_8x4"], results["reductions_8x4"] = _counted(
        lambda: _train(tiny_model(), rank, 8, 4, _ddp)["model"]
    )
    results["ddp_8"], results["reductions_8"] = _counted(
        lambda: _train(tiny_model(), rank, 8, 1, _ddp)["model"]
    )
    fsdp_model = tiny_model()
    fsdp = _train(fsdp_model, rank, 32, 1, shard_fsdp)
    results["fsdp_32"], results["fsdp_optimizer"] = fsdp["model"], fsdp["optimizer"]
    results["fsdp_fraction"] = local_param_fraction(fsdp_model)
    results["fsdp_8x4"] = _train(tiny_model(), rank, 8, 4, shard_fsdp)["model"]
    # A one-process model's state into a sharded model, and back out: the same weights.
    single = tiny_model(seed=5).state_dict()
    resharded = shard_fsdp(tiny_model())
    load_full_states(resharded, None, copy.deepcopy(single), None)
    results["fsdp_roundtrip"] = full_states(resharded)["model"]
    # Validation: rank 0 gets 3 batches of 8, rank 1 the other 13 rows (two batches): parts of unequal size.
    val = rows(VAL_ROWS, seed=4)
    parts = batches(val, 8, stop=24) if rank == 0 else batches(val, 8, start=24)
    scorer = tiny_model(seed=7)
    per_class = ClassMetrics(3)
    results["val_ddp"] = _scores(scorer, parts, per_class, in_step=False)
    results["val_ddp_classes"] = per_class.result()
    sharded_scorer = shard_fsdp(tiny_model(seed=7))
    per_class = ClassMetrics(3)
    results["val_fsdp"] = _scores(sharded_scorer, parts, per_class, in_step=True)
    results["val_fsdp_classes"] = per_class.result()
    # A set smaller than one batch per worker: rank 1 gets nothing, and pads with a batch rank 0 sends it.
    tiny = batches(rows(5, seed=6), 8) if rank == 0 else []
    results["val_fsdp_empty_part"] = _scores(sharded_scorer, tiny, ClassMetrics(3), in_step=True)
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    return run_on_gloo(_worker, tmp_path_factory.mktemp("gloo"), WORLD)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_accumulation_on_two_workers_equals_the_large_batch(results):
    assert _max_diff(results["ddp_8x4"], results["ddp_32"]) < TOLERANCE
    # Gradients crossed the workers once per optimizer step (no_sync on the first three micro-batches).
    assert results["reductions_8x4"] == results["reductions_32"] > 0
    assert results["reductions_8"] == 4 * results["reductions_32"]
    # Stepping every micro-batch lands far away: accumulation (and its gradient sync) made them equal.
    assert _max_diff(results["ddp_8"], results["ddp_32"]) > 20 * TOLERANCE


def test_fsdp_ends_with_ddps_parameters_after_k_steps(results):
    assert _max_diff(results["fsdp_32"], results["ddp_32"]) < TOLERANCE
    assert _max_diff(results["fsdp_8x4"], results["ddp_32"]) < TOLERANCE


def test_fsdp_holds_about_half_the_parameters_on_each_of_two_workers(results):
    assert 0.45 < results["fsdp_fraction"] < 0.55


def test_a_sharded_checkpoint_loads_into_one_process_and_back(results):
    model = tiny_model()
    model.load_state_dict(results["fsdp_32"])  # strict: every name, no prefixes, full shapes
    assert set(results["fsdp_optimizer"]["state"]) <= set(results["fsdp_32"])  # keyed by parameter name
    single = tiny_model(seed=5).state_dict()
    assert _max_diff(results["fsdp_roundtrip"], single) == 0.0


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_split_validation_equals_one_process_on_an_odd_sized_set(results, strategy):
    val = rows(VAL_ROWS, seed=4)
    per_class = ClassMetrics()
    expected = evaluate_subsets(tiny_model(seed=7), batches(val, 16), SUBSETS, per_class=per_class)
    got = results[f"val_{strategy}"]
    assert set(got) == set(SUBSETS)
    for subset in SUBSETS:
        assert got[subset]["samples"] == expected[subset]["samples"] == VAL_ROWS
        assert got[subset]["accuracy"] == expected[subset]["accuracy"]  # counts: exact
        assert abs(got[subset]["loss"] - expected[subset]["loss"]) < 1e-6
    assert results[f"val_{strategy}_classes"] == per_class.result()


def test_a_worker_with_an_empty_part_still_scores_in_step(results):
    expected = evaluate_subsets(tiny_model(seed=7), batches(rows(5, seed=6), 8), SUBSETS)
    got = results["val_fsdp_empty_part"]
    assert got["image"]["samples"] == 5 and got["image"]["accuracy"] == expected["image"]["accuracy"]


def test_scoring_is_not_fooled_by_a_single_batch_path(tmp_path: Path):
    # The one-process reference really scores every row (not just the first batch) and to_device keeps labels.
    val = rows(VAL_ROWS, seed=4)
    one = evaluate_subsets(tiny_model(seed=7), batches(val, VAL_ROWS), ("image",))
    assert one["image"]["samples"] == VAL_ROWS
    assert to_device(batches(val, 5)[0], "cpu")["label"].shape == (5,)

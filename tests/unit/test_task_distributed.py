"""Distributed validation of the task metrics: two gloo processes (no Ray) each score their part of an odd-sized
set; the merged multilabel (F1 sums, and the per-sample scores gathered for the exact mAP) and regression (R^2
sums) metrics equal one process scoring the whole set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mm_ray.config.schema import TaskConfig
from mm_ray.tasks import TargetStats, task_of
from mm_ray.train.mergeable import all_reduce_metrics, merge_states
from mm_ray.train.metrics import DEFAULT_REGISTRY, evaluate_subsets, score_subsets
from tests.gloo_group import run_on_gloo
from tests.tiny_fusion import batches, rows, tiny_model

pytestmark = pytest.mark.slow

WORLD = 2
VAL_ROWS = 37
SUBSETS = DEFAULT_REGISTRY.subsets()
TASKS = {
    "multilabel": TaskConfig(kind="multilabel", threshold=0.45),
    "regression": TaskConfig(kind="regression"),
}
STATS = TargetStats((1.0, -2.0, 0.5), (2.0, 1.0, 3.0))


def task_rows(kind: str) -> dict[str, np.ndarray]:
    """The tiny model's rows with a vector label of 3 entries: tags or targets."""
    columns = rows(VAL_ROWS, seed=4)
    rng = np.random.default_rng(9)
    if kind == "multilabel":
        columns["label"] = (rng.random((VAL_ROWS, 3)) < 0.4).astype(np.float32)
    else:
        columns["label"] = (rng.standard_normal((VAL_ROWS, 3)) * 3 + 1).astype(np.float32)
    return columns


def _worker(rank: int) -> dict:
    results = {}
    for kind, cfg in TASKS.items():
        task = task_of(cfg, STATS)
        val = task_rows(kind)
        parts = batches(val, 8, stop=24) if rank == 0 else batches(val, 8, start=24)
        per_class = task.class_meter(3)
        meters = score_subsets(
            tiny_model(seed=7), parts, SUBSETS, per_class=per_class, meter=lambda t=task: t.meter(3)
        )
        all_reduce_metrics([*meters.values(), per_class])
        results[kind] = {subset: meter.result() for subset, meter in meters.items()}
        results[f"{kind}_classes"] = task.class_table(per_class, ["a", "b", "c"])
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    return run_on_gloo(_worker, tmp_path_factory.mktemp("gloo_tasks"), WORLD, weights_only=False)


def _one_process(kind: str):
    task = task_of(TASKS[kind], STATS)
    per_class = task.class_meter(3)
    got = evaluate_subsets(
        tiny_model(seed=7),
        batches(task_rows(kind), 16),
        SUBSETS,
        per_class=per_class,
        meter=lambda: task.meter(3),
    )
    return got, task.class_table(per_class, ["a", "b", "c"])


@pytest.mark.parametrize("kind", list(TASKS))
def test_split_task_metrics_equal_one_process_on_an_odd_sized_set(results, kind):
    expected, classes = _one_process(kind)
    got = results[kind]
    assert set(got) == set(SUBSETS)
    for subset in SUBSETS:
        assert got[subset]["samples"] == expected[subset]["samples"] == VAL_ROWS
        for name, value in expected[subset].items():
            assert got[subset][name] == pytest.approx(value, abs=1e-6, nan_ok=True), (subset, name)
    for row, want in zip(results[f"{kind}_classes"], classes, strict=True):
        assert row == pytest.approx(want, abs=1e-6, nan_ok=True)


def test_merge_states_concatenates_rows_and_sums_the_rest():
    task = task_of(TASKS["multilabel"])
    a, b, whole = task.meter(2), task.meter(2), task.meter(2)
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.1], [-0.5, 0.7]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    a.update(logits[:1], labels[:1])
    b.update(logits[1:], labels[1:])
    whole.update(logits, labels)
    merged = task.meter(2)
    merged.load_state(merge_states([a.state(), b.state()]))
    assert merged.result() == pytest.approx(whole.result())

"""Tasks (``mm_ray.tasks``): metrics against independent numpy computations, losses, prediction columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mm_ray.config.schema import TaskConfig
from mm_ray.tasks import TargetStats, headline_metric, prediction_columns, task_of
from mm_ray.tasks.multilabel import MultilabelMetrics, average_precision
from mm_ray.tasks.regression import RegressionMetrics


def direct_ap(scores: np.ndarray, positive: np.ndarray) -> float:
    """AP by its definition: for each positive, the share of positives among the samples scored >= it."""
    precisions = [
        positive[scores >= scores[i]].sum() / (scores >= scores[i]).sum() for i in np.flatnonzero(positive)
    ]
    return float(np.mean(precisions))


def counted_f1(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(micro, macro) F1 by counting, loops only; macro over tags with a positive or a prediction."""
    tp = fp = fn = 0
    per_tag = []
    for k in range(truth.shape[1]):
        a = b = c = 0
        for i in range(truth.shape[0]):
            a += bool(pred[i, k] and truth[i, k])
            b += bool(pred[i, k] and not truth[i, k])
            c += bool(not pred[i, k] and truth[i, k])
        tp, fp, fn = tp + a, fp + b, fn + c
        if a + b + c:
            per_tag.append(2 * a / (2 * a + b + c))
    return 2 * tp / (2 * tp + fp + fn), sum(per_tag) / len(per_tag)


def test_average_precision_matches_the_definition_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 6, size=40) / 5.0  # many ties
        positive = rng.random(40) < 0.3
        positive[0] = True
        assert average_precision(scores, positive) == pytest.approx(direct_ap(scores, positive), abs=1e-12)
    assert math.isnan(average_precision(np.ones(3), np.zeros(3)))


def test_multilabel_metrics_match_counting_and_direct_ap():
    rng = np.random.default_rng(1)
    n, k = 57, 5
    logits = rng.normal(size=(n, k)).astype(np.float32)
    truth = (rng.random((n, k)) < 0.4).astype(np.float32)
    truth[:, 4] = 0  # a tag without positives: no AP, and F1 only where it is predicted
    meter = MultilabelMetrics(k, threshold=0.6)
    for part in np.array_split(np.arange(n), 4):
        meter.update(torch.from_numpy(logits[part]), torch.from_numpy(truth[part]))
    got = meter.result()
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    pred = probs >= 0.6
    micro, macro = counted_f1(pred, truth > 0.5)
    assert got["micro_f1"] == pytest.approx(micro, abs=1e-9)
    assert got["macro_f1"] == pytest.approx(macro, abs=1e-9)
    aps = [direct_ap(probs[:, j], truth[:, j] > 0.5) for j in range(4)]
    assert got["map"] == pytest.approx(np.mean(aps), abs=1e-6)
    assert got["tag_accuracy"] == pytest.approx((pred == (truth > 0.5)).mean(), abs=1e-12)
    bce = -(truth * np.log(probs) + (1 - truth) * np.log(1 - probs)).mean()
    assert got["loss"] == pytest.approx(bce, rel=1e-5)
    assert got["samples"] == n
    table = meter.per_tag(["a", "b", "c", "d", "e"])
    assert [r["class"] for r in table] == ["a", "b", "c", "d", "e"]
    assert table[1]["positives"] == int(truth[:, 1].sum())
    assert math.isnan(table[4]["ap"])


def test_regression_metrics_match_hand_computation():
    rng = np.random.default_rng(2)
    n = 101
    y = np.stack([rng.normal(50, 10, n), rng.normal(-3, 0.5, n)], axis=1)
    stats = TargetStats.of(y[:60])
    task = task_of(TaskConfig(kind="regression"), stats)
    z = rng.normal(size=(n, 2))
    pred = z * np.array(stats.std) + np.array(stats.mean)
    meter = RegressionMetrics(task, 2)
    for part in np.array_split(np.arange(n), 3):
        meter.update(torch.tensor(z[part], dtype=torch.float32), torch.tensor(y[part], dtype=torch.float32))
    got = meter.result()
    y32 = y.astype(np.float32).astype(np.float64)
    r2 = [
        1 - ((y32[:, t] - pred[:, t]) ** 2).sum() / ((y32[:, t] - y32[:, t].mean()) ** 2).sum()
        for t in range(2)
    ]
    assert got["r2"] == pytest.approx(np.mean(r2), abs=1e-5)
    assert got["mae"] == pytest.approx(np.abs(y32 - pred).mean(), rel=1e-5)
    assert got["rmse"] == pytest.approx(np.mean(np.sqrt(((y32 - pred) ** 2).mean(axis=0))), rel=1e-5)
    standardised = (y32 - np.array(stats.mean)) / np.array(stats.std)
    assert got["loss"] == pytest.approx(((z - standardised) ** 2).mean(), rel=1e-4)
    rows = meter.per_target(["height", "offset"])
    assert rows[0]["r2"] == pytest.approx(r2[0], abs=1e-5)


def test_target_stats_are_the_training_mean_and_std():
    y = np.array([[1.0, 5.0], [3.0, 5.0], [8.0, 5.0]])
    stats = TargetStats.of(y)
    assert stats.mean == pytest.approx((4.0, 5.0))
    assert stats.std[0] == pytest.approx(np.sqrt(((y[:, 0] - 4) ** 2).mean()))
    assert stats.std[1] == 1.0  # a constant target: no division by zero
    assert TargetStats.from_dict(stats.to_dict()) == stats


def test_losses():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    y = labels.numpy()
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    assert task_of(TaskConfig(kind="multilabel")).loss(logits, labels).item() == pytest.approx(bce, rel=1e-6)
    stats = TargetStats((10.0,), (2.0,))
    out, target = torch.tensor([[0.0], [3.0]]), torch.tensor([[12.0], [10.0]])  # standardised: 1, 0
    mse = task_of(TaskConfig(kind="regression"), stats).loss(out, target).item()
    assert mse == pytest.approx(((0 - 1) ** 2 + (3 - 0) ** 2) / 2)
    huber = (
        task_of(TaskConfig(kind="regression", loss="huber", huber_delta=1.0), stats).loss(out, target).item()
    )
    assert huber == pytest.approx((0.5 * 1**2 + (3 - 0.5)) / 2)
    ce = task_of(TaskConfig()).loss(logits, torch.tensor([0, 1])).item()
    expected = -np.mean([np.log(np.exp(2) / (np.exp(2) + np.exp(-1))), np.log(1 / (np.exp(0.5) + 1))])
    assert ce == pytest.approx(expected, rel=1e-6)


def test_prediction_columns_of_each_task():
    logits = torch.tensor([[2.0, -1.0, 0.1], [-3.0, 0.5, 4.0]])
    cls = prediction_columns(TaskConfig(), logits, ["bird", "cat", "dog"])
    assert list(cls["predicted"]) == ["bird", "dog"]
    assert cls["probabilities"].sum(axis=1) == pytest.approx([1.0, 1.0])
    tags = prediction_columns(TaskConfig(kind="multilabel", threshold=0.5), logits, ["a", "b", "c"])
    assert tags["predicted_tags"] == [["a", "c"], ["b", "c"]]
    assert tags["probabilities"][0, 1] == pytest.approx(1 / (1 + np.exp(1.0)))
    stats = TargetStats((100.0, 0.0), (10.0, 2.0))
    reg = prediction_columns(TaskConfig(kind="regression"), logits[:, :2], ["price", "age"], stats)
    assert reg["predicted"] == pytest.approx(np.array([[120.0, -2.0], [70.0, 1.0]]))
    assert reg["predicted_price"] == pytest.approx([120.0, 70.0])
    saved = TaskConfig(kind="regression", target_mean=[100.0, 0.0], target_std=[10.0, 2.0])
    assert prediction_columns(saved, logits[:, :2])["predicted"] == pytest.approx(reg["predicted"])


def test_headline_metrics_follow_the_task():
    assert headline_metric(TaskConfig()) == ("val_accuracy", "max")
    assert headline_metric(TaskConfig(kind="multilabel")) == ("val_map", "max")
    assert headline_metric(TaskConfig(kind="regression")) == ("val_r2", "max")
    with pytest.raises(ValueError, match="target statistics"):
        task_of(TaskConfig(kind="regression"))


def test_tune_metric_defaults_to_the_tasks_headline():
    from mm_ray.config.load import load_config
    from mm_ray.tune.sweep import with_objective

    assert with_objective(load_config(None, [])).tune.metric == "val_accuracy"
    tags = with_objective(load_config(None, ["task.kind=multilabel"])).tune
    assert (tags.metric, tags.mode) == ("val_map", "max")
    assert with_objective(load_config(None, ["task.kind=regression"])).tune.metric == "val_r2"
    mine = with_objective(
        load_config(None, ["task.kind=regression", "tune.metric=val_mae", "tune.mode=min"])
    ).tune
    assert (mine.metric, mine.mode) == ("val_mae", "min")


@pytest.mark.parametrize("setting", ["train.aux_loss_weight=0.5", "model.preset=mvae"])
def test_classifier_only_settings_are_refused_for_the_other_tasks(setting):
    from mm_ray.config.load import ConfigError, load_config
    from mm_ray.train.spec import check_task

    check_task(load_config(None, [setting]))  # classification: fine
    with pytest.raises(ConfigError, match=r"task\.kind=multilabel"):
        check_task(load_config(None, [setting, "task.kind=multilabel"]))

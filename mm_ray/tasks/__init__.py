"""Tasks: what a run predicts (``task.kind``), each kind in one module behind one interface (``Task``).

    task = task_of(cfg.task)                      # Classification | Multilabel | Regression
    loss = task.loss(logits, batch["label"])      # what training optimises
    meter = task.meter(outputs); meter.update(logits, labels); meter.result()   # {"loss", "map", ...}
    cols = prediction_columns(cfg.task, logits, label_names=cfg.data.classes)   # what a prediction outputs

=================  ===============================  =======================  ==========================
kind               ``label`` column                 loss                     metrics (headline first)
=================  ===============================  =======================  ==========================
classification     int64 class id                   cross-entropy            accuracy
multilabel         float32 multi-hot ``[K]``        BCE-with-logits          map, micro_f1, macro_f1,
                                                                             tag_accuracy
regression         float32 raw targets ``[T]``      MSE / Huber (standard-   r2, mae, rmse
                                                    ised targets)
=================  ===============================  =======================  ==========================

The model's head has ``model.num_classes`` outputs: classes, tags or targets. Pure Python, numpy and torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mm_ray.config.schema import TaskConfig
from mm_ray.tasks.base import TargetStats, Task, UnknownLabel
from mm_ray.tasks.classification import Classification
from mm_ray.tasks.multilabel import Multilabel
from mm_ray.tasks.regression import Regression

__all__ = [
    "Classification",
    "Multilabel",
    "Regression",
    "TargetStats",
    "Task",
    "UnknownLabel",
    "headline_metric",
    "prediction_columns",
    "target_stats_of",
    "task_of",
]


def target_stats_of(task: TaskConfig) -> TargetStats | None:
    """The standardisation of a regression config (``task.target_mean``/``target_std``), None while unknown."""
    if not task.target_mean:
        return None
    return TargetStats(tuple(task.target_mean), tuple(task.target_std))


def task_of(task: TaskConfig | Task, target_stats: TargetStats | None = None) -> Task:
    """The ``Task`` of a config's ``task`` section (a ``Task`` passes through). Regression needs the training
    set's target statistics: ``target_stats``, else the section's ``target_mean``/``target_std``."""
    if not isinstance(task, TaskConfig):
        return task
    if task.kind == "multilabel":
        return Multilabel(threshold=task.threshold, separator=task.separator)
    if task.kind == "regression":
        stats = target_stats or target_stats_of(task)
        if stats is None:
            raise ValueError(
                "task.kind=regression: the target statistics are unknown (task.target_mean/target_std are "
                "filled from the training data by `mm-ray preprocess` / `mm-ray train`)"
            )
        return Regression(stats, loss_kind=task.loss, huber_delta=task.huber_delta)
    return Classification()


def headline_metric(task: TaskConfig) -> tuple[str, str]:
    """``(metric, mode)`` that ranks runs of ``task`` (``tune.metric``'s default): ``("val_map", "max")``."""
    kinds = {"classification": Classification, "multilabel": Multilabel}
    chosen = kinds.get(task.kind)
    if chosen is None:
        return f"val_{Regression.headline}", Regression.mode
    return f"val_{chosen.headline}", chosen.mode


def prediction_columns(
    task: TaskConfig | Task,
    logits: torch.Tensor | np.ndarray,
    label_names: Sequence[str] | None = None,
    target_stats: TargetStats | None = None,
) -> dict[str, Any]:
    """A batch of model outputs ``[B, C]`` as the task's prediction columns (one entry per sample each):

    - classification: ``predicted`` (the class name with ``label_names``, else the int64 id), ``probabilities``
      (float32 ``[B, C]``, softmax);
    - multilabel: ``predicted_tags`` (a list of the tag names whose probability is at least ``task.threshold``,
      ids as strings without ``label_names``), ``probabilities`` (float32 ``[B, K]``, sigmoid per tag);
    - regression: ``predicted`` (float32 ``[B, T]``, de-standardised with ``target_stats`` or the task's own),
      and, where ``label_names`` names the targets (``task.targets``), ``predicted_<name>`` (float32 ``[B]``).

    ``task``: a config's ``task`` section (a checkpoint's ``loop.resolved.task``) or a ``Task``. numpy out.
    """
    resolved = task_of(task, target_stats)
    z = torch.as_tensor(logits).detach().float().cpu()
    if resolved.kind == "multilabel":
        probabilities = torch.sigmoid(z).numpy()
        chosen = probabilities >= resolved.threshold
        names = list(label_names) if label_names else [str(k) for k in range(z.shape[-1])]
        tags = [[names[k] for k in np.flatnonzero(row)] for row in chosen]
        return {"predicted_tags": tags, "probabilities": probabilities.astype(np.float32)}
    if resolved.kind == "regression":
        values = resolved.destandardise(z).numpy().astype(np.float32)
        out: dict[str, Any] = {"predicted": values}
        if label_names and len(label_names) == values.shape[-1]:
            out.update({f"predicted_{name}": values[:, k] for k, name in enumerate(label_names)})
        return out
    probabilities = torch.softmax(z, dim=-1).numpy().astype(np.float32)
    ids = z.argmax(dim=-1).numpy().astype(np.int64)
    if label_names:
        return {
            "predicted": np.array([label_names[i] for i in ids], dtype=object),
            "probabilities": probabilities,
        }
    return {"predicted": ids, "probabilities": probabilities}

"""What a prediction looks like: the one place that turns a batch's model outputs into output columns.

    columns = prediction_columns(logits, classes=["cat", "dog"])   # {"predicted": [...], "probabilities": [B, C]}
    with fused_embeddings(model) as captured:
        logits = model(batch)
    captured["embedding"]          # [B, D]: the input of the fusion's classifier head

``predict`` (Parquet rows) and ``serving`` (HTTP answers) both call ``prediction_columns``, so a task other than
single-label classification changes the output of both in this one function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

PREDICTED = "predicted"
"""Classification: the predicted class (its name when the run was trained on class names, else its id);
regression: the de-standardised targets. Multilabel writes ``predicted_tags`` (``mm_ray.tasks``)."""
PROBABILITIES = "probabilities"
"""float32 ``[C]``: the softmax (classification) or per-tag sigmoid (multilabel) of the logits."""
EMBEDDING = "embedding"
"""float32 ``[D]``: the fused embedding (``predict.embedding``)."""


def prediction_columns(logits: torch.Tensor, classes: Sequence[str] | None = None, task: Any = None) -> dict:
    """The prediction columns of a batch of logits ``[B, C]`` for the run's ``task`` (a config's ``task``
    section; None: single-label classification): ``mm_ray.tasks.prediction_columns`` with the run's class
    names (classification, multilabel) or target names (regression) as the labels."""
    from mm_ray.config.schema import TaskConfig
    from mm_ray.tasks import prediction_columns as task_columns

    task = task or TaskConfig()
    names = classes if task.kind != "regression" else (list(task.targets) or None)
    return task_columns(task, logits, label_names=names)


def classifier_head(model: nn.Module) -> nn.Linear:
    """The last linear layer of a fusion model's single classifier head (``model.fusion.head``): its input is the
    fused embedding. ``ValueError`` for a fusion with no single head (additive: one head per modality)."""
    head = getattr(getattr(model, "fusion", None), "head", None)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if isinstance(head, nn.Module) else []
    if not linears:
        fusion = type(getattr(model, "fusion", model)).__name__
        raise ValueError(
            f"predict.embedding: {fusion} has no single classifier head to take a fused embedding from"
        )
    return linears[-1]


@contextlib.contextmanager
def fused_embeddings(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """While inside, each forward of ``model`` leaves its fused embedding ``[B, D]`` in the yielded dict under
    ``EMBEDDING`` (a forward pre-hook on the classifier head's last layer)."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured[EMBEDDING] = inputs[0].detach()

    handle = classifier_head(model).register_forward_pre_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()

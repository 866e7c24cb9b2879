"""What every task shares: the ``Task`` interface, target statistics, and the label errors the reader quarantines.

A task (``classification``, ``multilabel``, ``regression``; ``mm_ray.tasks.task_of``) says, in one place, what the
``label`` column holds, how a sample's label is read from its members, the loss, the size of the model's head,
the metrics (mergeable accumulators, ``mm_ray.train.mergeable``), the headline metric, and how logits become
predictions. Pure Python, numpy and torch: no Ray, no config objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch


class UnknownLabel(ValueError):
    """A label (class name or tag) that is not in the run's label map: quarantined as ``unknown_label``."""


@dataclasses.dataclass(frozen=True)
class TargetStats:
    """Per-target mean and standard deviation of a regression training set: the model predicts standardised
    targets, ``(y - mean) / std``; predictions are turned back with ``z * std + mean``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        if len(self.mean) != len(self.std):
            raise ValueError(f"target stats: {len(self.mean)} means but {len(self.std)} standard deviations")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"target stats: every standard deviation must be > 0, got {list(self.std)}")

    @classmethod
    def of(cls, targets: np.ndarray) -> TargetStats:
        """From the training targets ``[N, T]`` (float64 sums; a constant target gets std 1, not 0)."""
        values = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
        if not len(values):
            raise ValueError("target stats: no training targets")
        std = values.std(axis=0)
        return cls(tuple(values.mean(axis=0)), tuple(np.where(std > 0, std, 1.0)))

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetStats:
        return cls(tuple(data["mean"]), tuple(data["std"]))


class Meter(Protocol):
    """A task's metric accumulator: ``update`` per batch, the ``Mergeable`` state methods, ``result``."""

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None: ...

    def state(self) -> dict[str, torch.Tensor]: ...

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None: ...

    def result(self) -> dict[str, float | int]: ...


class Task(Protocol):
    """One kind of prediction target (see the module docstring)."""

    kind: str
    headline: str
    """The metric that ranks runs and trials (``val_<headline>``)."""
    mode: str
    """``max`` or ``min``: whether a higher headline is better."""
    metrics: tuple[str, ...]
    """The names ``Meter.result`` gives besides ``loss`` and ``samples``, in report order."""

    def label_shape(self, outputs: int) -> tuple[int, ...]:
        """Per-row shape of the ``label`` column: () for class ids, (outputs,) for tag or target vectors."""
        ...

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean training loss of a batch (float32, whatever the autocast dtype)."""
        ...

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The batch's summed training score (``train_accuracy`` = hits / samples): correct classes, the
        fraction of tags decided right per sample; NaN for regression (no accuracy)."""
        ...

    def meter(self, outputs: int) -> Meter:
        """A fresh accumulator of the task's metrics for a head of ``outputs``."""
        ...

    def class_table(self, meter: Meter, names: Sequence[str] | None) -> list[dict[str, Any]]:
        """Per class (tag, target) rows of a full-subset meter, by name."""
        ...

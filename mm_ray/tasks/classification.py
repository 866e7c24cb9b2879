"""Single-label classification (``task.kind=classification``, the default): one class id per sample.

The ``label`` column holds an int64 class id (``mm_ray.data.members`` reads integer or named labels);
cross-entropy on the logits ``[B, C]``; accuracy per modality subset (``SubsetMetrics``) and per class
(``ClassMetrics``); the headline is ``val_accuracy``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Classification:
    kind: str = "classification"
    headline: str = "accuracy"
    mode: str = "max"
    metrics: tuple[str, ...] = ("accuracy",)

    def label_shape(self, outputs: int) -> tuple[int, ...]:
        return ()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: a bf16/fp16 log-softmax loses too much precision.
        return F.cross_entropy(logits.float(), labels.long())

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(dim=-1) == labels).sum()

    def meter(self, outputs: int) -> SubsetMetrics:
        return SubsetMetrics()

    def class_meter(self, outputs: int) -> ClassMetrics:
        return ClassMetrics(outputs)

    def class_table(self, meter: ClassMetrics, names: Sequence[str] | None) -> list[dict[str, Any]]:
        return meter.result(names)


class SubsetMetrics:
    """Accumulates sample-weighted cross-entropy and accuracy over batches of logits (``Mergeable``).

    ``update(logits, labels)`` per batch, ``result()`` at the end. The sums stay on the logits' device so
    updating never forces a device sync; ``result()`` syncs once. ``state()``/``load_state()`` expose the sums
    so ranks scoring parts of one set can add them up (``mm_ray.train.mergeable.all_reduce_metrics``).
    """

    def __init__(self) -> None:
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._correct = torch.zeros((), dtype=torch.int64)
        self._samples = torch.zeros((), dtype=torch.int64)

    @property
    def samples(self) -> int:
        return int(self._samples.item())

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.detach().float()
        labels = labels.to(logits.device).long()
        loss_sum = F.cross_entropy(logits, labels, reduction="sum").double()
        correct = (logits.argmax(dim=-1) == labels).sum()
        device = logits.device
        self._loss_sum = self._loss_sum.to(device) + loss_sum
        self._correct = self._correct.to(device) + correct
        self._samples = self._samples.to(device) + labels.shape[0]

    def state(self) -> dict[str, torch.Tensor]:
        return {"loss_sum": self._loss_sum, "correct": self._correct, "samples": self._samples}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self._loss_sum, self._correct, self._samples = state["loss_sum"], state["correct"], state["samples"]

    def result(self) -> dict[str, float | int]:
        """``{"loss", "accuracy", "samples"}``; loss and accuracy are NaN when nothing was seen."""
        samples = self.samples
        if not samples:
            return {"loss": float("nan"), "accuracy": float("nan"), "samples": 0}
        return {
            "loss": self._loss_sum.item() / samples,
            "accuracy": self._correct.item() / samples,
            "samples": samples,
        }


class ClassMetrics:
    """Samples and correct predictions per true class (``update(logits, labels)`` per batch), on the device
    until ``result`` syncs once (``Mergeable``). ``num_classes`` fixes the state's length (needed to merge
    ranks, one of which may not see every class); None = sized from the first batch's logits."""

    def __init__(self, num_classes: int | None = None) -> None:
        self._samples: torch.Tensor | None = None
        self._correct: torch.Tensor | None = None
        if num_classes is not None:
            self._samples = torch.zeros(num_classes, dtype=torch.int64)
            self._correct = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        labels = labels.to(logits.device).long()
        n = logits.shape[-1]
        samples = torch.bincount(labels, minlength=n)[:n]
        correct = torch.bincount(labels[logits.argmax(dim=-1) == labels], minlength=n)[:n]
        if self._samples is None:
            self._samples, self._correct = samples, correct
        else:
            self._samples = self._samples.to(samples.device) + samples
            self._correct = self._correct.to(correct.device) + correct

    def state(self) -> dict[str, torch.Tensor]:
        if self._samples is None:
            raise ValueError("ClassMetrics: give num_classes to merge a meter that may have seen no batch")
        return {"samples": self._samples, "correct": self._correct}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self._samples, self._correct = state["samples"], state["correct"]

    def result(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per class seen: ``{"class": name (or the id), "id", "samples", "accuracy"}``."""
        if self._samples is None:
            return []
        samples, correct = self._samples.tolist(), self._correct.tolist()
        return [
            {
                "class": names[i] if names and i < len(names) else str(i),
                "id": i,
                "samples": int(n),
                "accuracy": correct[i] / n,
            }
            for i, n in enumerate(samples)
            if n
        ]

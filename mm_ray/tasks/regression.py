"""Regression (``task.kind=regression``): one or more float targets per sample.

Targets: with ``task.targets`` empty, one number from the label member (``.cls``/``.txt`` holding ``3.25``),
else from the JSON field ``data.members.json_label_field``; with ``task.targets=[age, price]`` each named JSON
field holds one (a JSON number, or a string holding one). Anything that is not a finite number quarantines
the sample as ``bad_label``, naming the field.

The ``label`` column holds the raw targets (float32 ``[T]``). The model predicts standardised targets
``(y - mean) / std`` with the training set's per-target mean and standard deviation (``TargetStats``: saved in
the cache manifest and every checkpoint's config, ``task.target_mean``/``target_std``): the loss (MSE or Huber,
``task.loss``) is taken on that scale; predictions are turned back (``z * std + mean``) before any metric or
output.

Metrics (``RegressionMetrics``, mergeable: per-target sums of y, y^2, residual^2 and |residual|, and the count):
MAE, RMSE and R^2 = 1 - SSE / SST (SST around the set's own mean; averaged over targets when there are
several), on the original scale. The headline is ``val_r2``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mm_ray.tasks.base import TargetStats


@dataclasses.dataclass(frozen=True)
class Regression:
    stats: TargetStats
    loss_kind: str = "mse"
    huber_delta: float = 1.0
    kind: str = "regression"
    headline: str = "r2"
    mode: str = "max"
    metrics: tuple[str, ...] = ("r2", "mae", "rmse")

    def label_shape(self, outputs: int) -> tuple[int, ...]:
        return (outputs,)

    def _scale(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.stats.mean, dtype=torch.float32, device=like.device)
        std = torch.tensor(self.stats.std, dtype=torch.float32, device=like.device)
        return mean, std

    def standardise(self, targets: torch.Tensor) -> torch.Tensor:
        mean, std = self._scale(targets)
        return (targets.float() - mean) / std

    def destandardise(self, outputs: torch.Tensor) -> torch.Tensor:
        mean, std = self._scale(outputs)
        return outputs.float() * std + mean

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z = self.standardise(labels)
        if self.loss_kind == "huber":
            return F.huber_loss(logits.float(), z, delta=self.huber_delta)
        return F.mse_loss(logits.float(), z)

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.tensor(float("nan"), device=logits.device)  # no accuracy for numbers

    def meter(self, outputs: int) -> RegressionMetrics:
        return RegressionMetrics(self, outputs)

    def class_meter(self, outputs: int) -> RegressionMetrics:
        return RegressionMetrics(self, outputs)

    def class_table(self, meter: RegressionMetrics, names: Sequence[str] | None) -> list[dict[str, Any]]:
        return meter.per_target(names)


def target_values(member: bytes | None, fields: Mapping[str, Any], targets: Sequence[str], label_field: str):
    """float32 ``[T]`` targets of one sample (see the module docstring); None when the sample has none;
    ``ValueError`` naming the field when one is not a finite number."""
    if targets:
        present = [name for name in targets if name in fields]
        if not present:
            return None
        missing = [name for name in targets if name not in fields]
        if missing:
            raise ValueError(f"JSON field {missing[0]!r} is missing (task.targets needs {list(targets)})")
        return np.array([_number(fields[n], f"JSON field {n!r}") for n in targets], dtype=np.float32)
    if member is not None:
        text = member.decode("utf-8", "replace").strip()
        return np.array([_number(text, "label member")], dtype=np.float32)
    if label_field and label_field in fields:
        return np.array([_number(fields[label_field], f"JSON field {label_field!r}")], dtype=np.float32)
    return None


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{where} is not a number: {str(value)[:40]!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{where} is not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(number) or abs(number) > 3.0e38:
        raise ValueError(f"{where} is not a finite float32 number: {str(value)[:40]!r}")
    return number


class RegressionMetrics:
    """Loss and per-target sums over batches of standardised outputs ``[B, T]`` against raw targets ``[B, T]``
    (``Mergeable``): MAE, RMSE and R^2 on the targets' own scale."""

    def __init__(self, task: Regression, num_targets: int) -> None:
        self.task, self.num_targets = task, num_targets
        zeros = torch.zeros(num_targets, dtype=torch.float64)
        self._sums = {
            "loss_sum": torch.zeros((), dtype=torch.float64),
            "samples": torch.zeros((), dtype=torch.int64),
            "sum_y": zeros.clone(),  # of y - the training mean, as sum_y2
            "sum_y2": zeros.clone(),
            "sse": zeros.clone(),
            "sae": zeros.clone(),
        }

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.detach().float()
        y = labels.to(logits.device).float().reshape(logits.shape)
        loss = self.task.loss(logits, y).double() * logits.shape[0]
        residual = (self.task.destandardise(logits) - y).double()
        # Shifted by the training mean: the same SST, without the cancellation of large raw sums.
        yd = (y - self.task._scale(y)[0]).double()
        batch = {
            "loss_sum": loss,
            "samples": torch.tensor(logits.shape[0], dtype=torch.int64),
            "sum_y": yd.sum(dim=0),
            "sum_y2": (yd * yd).sum(dim=0),
            "sse": (residual * residual).sum(dim=0),
            "sae": residual.abs().sum(dim=0),
        }
        for name, value in batch.items():
            self._sums[name] = self._sums[name].to(logits.device) + value.to(logits.device)

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self._sums)

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self._sums = {name: state[name] for name in self._sums}

    def _per_target(self) -> dict[str, np.ndarray]:
        n = float(self._sums["samples"].item())
        s = {k: v.cpu().numpy() for k, v in self._sums.items() if k not in ("loss_sum", "samples")}
        sst = s["sum_y2"] - s["sum_y"] ** 2 / n
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = np.where(sst > 0, 1.0 - s["sse"] / sst, np.nan)
        return {"mae": s["sae"] / n, "rmse": np.sqrt(s["sse"] / n), "r2": r2}

    def result(self) -> dict[str, float | int]:
        """``{"loss", "r2", "mae", "rmse", "samples"}`` (means over the targets); NaN when nothing was seen."""
        samples = int(self._sums["samples"].item())
        if not samples:
            nan = float("nan")
            return {"loss": nan, "r2": nan, "mae": nan, "rmse": nan, "samples": 0}
        t = self._per_target()
        return {
            "loss": self._sums["loss_sum"].item() / samples,
            "r2": float(np.mean(t["r2"])),
            "mae": float(np.mean(t["mae"])),
            "rmse": float(np.mean(t["rmse"])),
            "samples": samples,
        }

    def per_target(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per target: ``{"class": name, "id", "samples", "mae", "rmse", "r2"}``."""
        samples = int(self._sums["samples"].item())
        if not samples:
            return []
        t = self._per_target()
        return [
            {
                "class": names[k] if names and k < len(names) else f"target{k}",
                "id": k,
                "samples": samples,
                "mae": float(t["mae"][k]),
                "rmse": float(t["rmse"][k]),
                "r2": float(t["r2"][k]),
            }
            for k in range(self.num_targets)
        ]

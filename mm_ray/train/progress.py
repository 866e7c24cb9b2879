"""One readable line per finished epoch, for long runs (``mm-ray train``, the demo, sweeps)::

epoch 3/12  train_loss 0.812  train_accuracy 0.651  val_accuracy 0.702  412 samples/s  29.1 s
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SHOWN = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def epoch_line(metrics: Mapping[str, Any], epochs: int) -> str:
    """The progress line of one epoch's metrics (as the workers report them) out of ``epochs``."""
    parts = [f"epoch {metrics.get('epoch', '?')}/{epochs}"]
    parts += [f"{key} {metrics[key]:.4f}" for key in SHOWN if _number(metrics.get(key))]
    if _number(metrics.get("train_samples_per_s")):
        parts.append(f"{metrics['train_samples_per_s']:,.0f} samples/s")
    if _number(metrics.get("train_seconds")):
        parts.append(f"{metrics['train_seconds']:.1f} s")
    if metrics.get("resumed_from"):
        parts.append(f"(resumed after epoch {metrics['resumed_from']})")
    return "  ".join(parts)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value

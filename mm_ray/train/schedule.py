"""Learning-rate schedules.

Usage::

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    scheduler = warmup_cosine(optimizer, warmup_steps=100, total_steps=10_000, min_lr_ratio=0.1)
    for batch in batches:
        ...  # forward, backward, optimizer.step()
        scheduler.step()  # once per optimizer step, not per epoch

The multiplier rises linearly over ``warmup_steps`` (reaching the optimizer's base lr at the last warm-up
step), then follows a half cosine from 1 down to ``min_lr_ratio`` at ``total_steps`` and stays there.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from mm_ray.train.spec import LoopConfig


def warmup_cosine_factor(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """The lr multiplier at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        # (step + 1): the very first step already trains; a multiplier of 0 would waste it.
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay, as a ``LambdaLR`` stepped once per optimizer step."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    # A partial of a module-level function (not a closure) so the scheduler pickles (Ray moves it around).
    factor = functools.partial(
        warmup_cosine_factor, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_and_schedule(model: torch.nn.Module, loop: LoopConfig) -> tuple[Any, Any]:
    """AdamW over the model's per-modality parameter groups and its warm-up + cosine schedule: what every
    trainer of a run builds from its ``LoopConfig`` (the Ray workers, ``mm-ray bench train``'s plain loop)."""
    from mm_ray.models import param_groups
    from mm_ray.train.wrapping import unwrap

    optimizer = torch.optim.AdamW(
        param_groups(unwrap(model), lr=loop.lr, lr_by_modality=dict(loop.lr_by_modality)),
        weight_decay=loop.weight_decay,
    )
    scheduler = warmup_cosine(optimizer, warmup_steps=loop.warmup_steps, total_steps=loop.total_steps)
    return optimizer, scheduler

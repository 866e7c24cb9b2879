"""Gradient accumulation in one process: N micro-batches of B give the parameters of one batch of N x B (AdamW,
clipping and the LR schedule included), also with a short last step; steps, the schedule and ``on_step`` count
optimizer steps. Two workers: ``test_distributed_equalities.py``."""

from __future__ import annotations

import torch

from mm_ray.train.loop import train_epoch
from mm_ray.train.schedule import warmup_cosine
from tests.tiny_fusion import batches, rows, tiny_model


def _train(micro: int, accum: int, n: int, *, on_step=None) -> tuple[list[torch.Tensor], dict, list[float]]:
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = warmup_cosine(optimizer, warmup_steps=1, total_steps=10)
    lrs: list[float] = []

    def record(step, group, running):
        lrs.append(optimizer.param_groups[0]["lr"])
        if on_step is not None:
            on_step(step, group, running)

    stats = train_epoch(
        model, batches(rows(n), micro), optimizer, scheduler, device="cpu", grad_clip=0.5,
        grad_accum_steps=accum, on_step=record,
    )  # fmt: skip
    return [p.detach().clone() for p in model.parameters()], stats, lrs


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


# AdamW divides by the root of the second moment, which magnifies summation-order differences of near-zero
# gradients: equal runs differ by ~3e-5 here, stepping every micro-batch by ~2e-2.
TOLERANCE = 2e-4


def test_four_micro_batches_of_8_train_as_one_batch_of_32():
    large, large_stats, large_lrs = _train(32, 1, 96)
    accumulated, stats, lrs = _train(8, 4, 96)
    assert _max_diff(accumulated, large) < TOLERANCE
    assert stats["steps"] == large_stats["steps"] == 3  # optimizer steps, not micro-batches
    assert lrs == large_lrs  # the schedule advanced once per optimizer step
    assert abs(stats["loss"] - large_stats["loss"]) < 1e-5 and stats["samples"] == 96
    # The same micro-batches stepped one by one land elsewhere: accumulation is what made them equal.
    assert _max_diff(_train(8, 1, 96)[0], large) > 20 * TOLERANCE


def test_a_short_last_step_weighs_its_samples_as_a_short_large_batch():
    # 40 samples: one step of 4 x 8, then one of a single micro-batch of 8 (divided by its 8 samples).
    large, large_stats, _ = _train(32, 1, 40)
    accumulated, stats, _ = _train(8, 4, 40)
    assert stats["steps"] == large_stats["steps"] == 2
    assert _max_diff(accumulated, large) < TOLERANCE


def test_on_step_gets_every_micro_batch_of_its_step_once():
    seen: list[tuple[int, int]] = []
    _train(
        8,
        4,
        40,
        on_step=lambda step, group, running: seen.append((step, sum(len(b["label"]) for b in group))),
    )
    assert seen == [(1, 32), (2, 8)]

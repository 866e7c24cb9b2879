"""The warm-up + cosine lr schedule, checked at the steps that define its shape."""

from __future__ import annotations

import itertools
import math
import pickle

import pytest
import torch

from mm_ray.train.schedule import warmup_cosine

BASE_LR = 0.1


def _lrs(steps: int, **kwargs) -> list[float]:
    """The lr used at each of the first ``steps`` optimizer steps."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=BASE_LR)
    scheduler = warmup_cosine(optimizer, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_linear_warmup_then_cosine_to_zero():
    lrs = _lrs(15, warmup_steps=4, total_steps=12)
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])  # first step already trains
    assert lrs[4] == pytest.approx(BASE_LR)  # decay starts from the peak
    assert lrs[8] == pytest.approx(BASE_LR * 0.5)  # halfway through the 8 decay steps: cos(pi/2)
    assert lrs[6] == pytest.approx(BASE_LR * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lrs[12] == pytest.approx(0.0, abs=1e-12)
    assert lrs[13:] == pytest.approx([0.0, 0.0], abs=1e-12)  # stays at the floor past total_steps
    decay = lrs[4:13]
    assert all(a > b for a, b in itertools.pairwise(decay))


def test_min_lr_ratio_sets_the_floor():
    lrs = _lrs(12, warmup_steps=2, total_steps=10, min_lr_ratio=0.1)
    assert lrs[10] == pytest.approx(BASE_LR * 0.1)
    assert lrs[11] == pytest.approx(BASE_LR * 0.1)
    assert lrs[6] == pytest.approx(BASE_LR * (0.1 + 0.9 * 0.5))


def test_no_warmup_starts_at_peak():
    lrs = _lrs(3, warmup_steps=0, total_steps=10)
    assert lrs[0] == pytest.approx(BASE_LR)
    assert lrs[1] < BASE_LR


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_steps": 5, "total_steps": 0},
        {"warmup_steps": 11, "total_steps": 10},
        {"warmup_steps": -1, "total_steps": 10},
        {"warmup_steps": 1, "total_steps": 10, "min_lr_ratio": 1.5},
    ],
)
def test_rejects_bad_arguments(kwargs):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    with pytest.raises(ValueError):
        warmup_cosine(optimizer, **kwargs)


def test_scheduler_state_round_trips_through_pickle():
    # Ray ships schedulers and checkpoints between processes, so the lr lambda must pickle.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    scheduler = warmup_cosine(optimizer, warmup_steps=2, total_steps=10)
    restored = pickle.loads(pickle.dumps(scheduler.state_dict()))
    assert restored["last_epoch"] == scheduler.last_epoch

"""Unfreezing under DDP: two gloo processes train a ``PretrainedEncoder`` frozen for epoch 0 on different data.
Wrapped again when it is unfrozen (``begin_epoch``, what the Train workers run), both copies stay equal and the
backbone trains; kept in the first wrapper, the backbone's gradients are never averaged and the copies drift apart
without an error, which is what the re-wrap prevents."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mm_ray.models.pretrained import PretrainedEncoder, apply_epoch
from mm_ray.train.freezing import begin_epoch
from tests.gloo_group import run_on_gloo

WORLD = 2

# Two spawned processes importing torch: seconds of CPU the default run does not need for every change.
pytestmark = pytest.mark.slow


def _train(rank: int, rewrap: bool) -> dict[str, bool]:
    torch.manual_seed(0)  # the same initial weights on both ranks
    encoder = PretrainedEncoder(
        nn.Sequential(nn.Linear(4, 8), nn.Tanh()), feature_dim=8, out_dim=3, freeze=True, unfreeze_after=1
    )
    start = [p.detach().clone() for p in encoder.backbone.parameters()]
    model: nn.Module = DistributedDataParallel(encoder)
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(rank)  # each rank its own batches, as with a split dataset
    for epoch in range(2):
        if rewrap:
            model = begin_epoch(model, epoch, wrap=DistributedDataParallel)
        else:
            apply_epoch(encoder, epoch)
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(16, 4, generator=data)).pow(2).mean().backward()
            optimizer.step()
    flat = torch.cat([p.detach().flatten() for p in encoder.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(WORLD)]
    dist.all_gather(gathered, flat)
    moved = any(not torch.equal(a, b) for a, b in zip(start, encoder.backbone.parameters(), strict=True))
    return {"same": torch.equal(gathered[0], gathered[1]), "moved": moved}


def _worker(rank: int) -> dict:
    return {"rewrap": _train(rank, rewrap=True), "kept": _train(rank, rewrap=False)}


def test_ddp_copies_stay_equal_only_when_rewrapped_at_the_unfreeze(tmp_path: Path) -> None:
    results = run_on_gloo(_worker, tmp_path, WORLD)
    assert results["rewrap"] == {"same": True, "moved": True}
    assert results["kept"] == {"same": False, "moved": True}

"""Scoring a DDP-wrapped model on one rank: the Train workers validate on rank 0 alone. A DDP wrapper's forward
broadcasts the module's buffers from rank 0 first, a collective the other rank never joins, so scoring through
the wrapper waits for ever on any model with buffers (BatchNorm; the cgan's spectral norm). ``evaluate_subsets``
scores the inner module; here two gloo processes check that rank 0 finishes while rank 1 waits at a barrier."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mm_ray.columns import LABEL
from mm_ray.train.metrics import evaluate_subsets

WORLD = 2

# Two spawned processes importing torch: seconds of CPU the default run does not need for every change.
pytestmark = pytest.mark.slow


class _Normalised(nn.Module):
    """A classifier with buffers (BatchNorm's running statistics) reading ``batch["x"]``."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.norm(batch["x"]))


def _worker(rank: int, store: str, out: str) -> None:
    # A short timeout: a collective rank 1 never joins fails rank 0 in seconds instead of hanging the test.
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=20),
    )
    torch.manual_seed(0)
    model = DistributedDataParallel(_Normalised())
    batches = [{"x": torch.randn(8, 4), LABEL: torch.randint(0, 3, (8,))} for _ in range(3)]
    result = {}
    if rank == 0:
        try:
            result = evaluate_subsets(model, batches, subsets=("image+text+audio",))
        except RuntimeError as err:  # gloo's timeout
            result = {"error": str(err)[:300]}
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


def test_rank_zero_alone_scores_a_ddp_model_with_buffers(tmp_path: Path) -> None:
    out = tmp_path / "result.pt"
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(out)), nprocs=WORLD, join=True)
    result = torch.load(out, weights_only=True)
    assert "error" not in result, result
    assert result["image+text+audio"]["samples"] == 24

"""Run a function on a gloo process group of spawned processes (no Ray), and bring rank 0's result back.

    results = run_on_gloo(work, tmp_path, world=2)      # work(rank) -> dict, a module-level function

Every process joins one group (a file store under ``tmp``), runs ``work(rank)`` with one torch thread, and
tears the group down in an order that cannot crash at exit: ``work``'s objects are freed while the group is
still up (an FSDP model keeps collective handles whose tensors hold Python references: freed during
interpreter shutdown instead, they abort the process with "terminate called without an active exception",
https://github.com/pytorch/pytorch/pull/179291), then every rank meets at a barrier before
``destroy_process_group``, so no rank tears its end down while another still talks to it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run_on_gloo(work: Callable[[int], Any], tmp: Path, world: int = 2, *, weights_only: bool = True) -> Any:
    """``work(rank)`` on ``world`` spawned gloo processes; returns what rank 0's call returned (saved with
    ``torch.save``, loaded with ``weights_only``)."""
    out = tmp / "results.pt"
    mp.spawn(_entry, args=(work, str(tmp / "store"), str(out), world), nprocs=world, join=True)
    return torch.load(out, weights_only=weights_only)


def _entry(rank: int, work: Callable[[int], Any], store: str, out: str, world: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    result = work(rank)
    gc.collect()  # work's models (and their collective handles) are gone before the group is
    if rank == 0:
        torch.save(result, out)
    del result
    dist.barrier()
    dist.destroy_process_group()

"""The model inside a data-parallel wrapper and ``torch.compile``.

    inner = unwrap(model)     # DistributedDataParallel(m) -> m; torch.compile(DDP(m)) -> m; m -> m

Whatever runs on one rank only must use the inner module: a DDP wrapper's forward takes part in collectives
(it broadcasts the module's buffers from rank 0 before each forward), which the other ranks would never join.
An FSDP2 model has no wrapper (``fully_shard`` changes the module itself): its forward always gathers from
every rank, so it is never run on one rank alone (``mm_ray.train.parallel``). Scoring through the inner
module of a compiled model also runs it eagerly: validation's masked subsets would each compile anew.
"""

from __future__ import annotations

import torch


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``torch.compile`` and a DDP-style wrapper (anything with ``.module``), else ``model``."""
    compiled = getattr(model, "_orig_mod", None)
    if isinstance(compiled, torch.nn.Module):
        model = compiled
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model

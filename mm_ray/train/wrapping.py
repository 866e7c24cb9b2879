"""The model inside a data-parallel wrapper.

    inner = unwrap(model)     # DistributedDataParallel(m) -> m; m -> m

Whatever runs on one rank only (scoring on rank 0, saving a checkpoint) must use the inner module: a DDP
wrapper's forward takes part in collectives (it broadcasts the module's buffers from rank 0 before each
forward), which the other ranks would never join.
"""

from __future__ import annotations

import torch


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP/FSDP-style wrapper (anything with ``.module``), else ``model`` itself."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model

"""Mixed precision for a step or an evaluation pass, shared by the training loop, its adversarial step and the
metrics (a module of its own, so that none of them imports another for it)."""

from __future__ import annotations

import contextlib

import torch


def autocast_context(
    device: str | torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the device's type with ``dtype``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)

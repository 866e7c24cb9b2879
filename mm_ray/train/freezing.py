"""The start of an epoch for models with library encoders: apply their freeze / unfreeze schedule, and wrap a DDP
model again when a parameter's ``requires_grad`` changed.

    for epoch in range(start_epoch, epochs):
        model = begin_epoch(model, epoch, wrap=lambda inner: DistributedDataParallel(inner))
        ...train the epoch...

Why wrap again: DDP registers its all-reduce hooks for the parameters that require gradients when it wraps the
model. A backbone unfrozen later would get gradients that are never averaged, and the workers' copies would drift
apart without any error. Every worker reaches the same epoch with the same schedule, so all of them wrap again
together (the wrap broadcasts rank 0's weights, already equal). The optimizer holds the parameters themselves, not
the wrapper, and is kept. Pure PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mm_ray.models.pretrained import apply_epoch
from mm_ray.train.wrapping import unwrap


def begin_epoch(model: nn.Module, epoch: int, *, wrap: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """``model`` with every library encoder set to its schedule's state for ``epoch`` (0-based); a DDP model
    whose trainable parameters changed comes back as ``wrap(the module inside)``."""
    # Seen through torch.compile: a compiled DDP model is wrapped (and compiled) again too. FSDP2 needs no
    # re-wrap: it reduces the gradients of whichever parameters have one at each backward.
    if apply_epoch(unwrap(model), epoch) and isinstance(
        getattr(model, "_orig_mod", model), DistributedDataParallel
    ):
        return wrap(unwrap(model))
    return model

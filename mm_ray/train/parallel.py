"""Data parallelism of the Train workers: FSDP2 sharding, gradient sync for accumulation, full state dicts.

    model = shard_fsdp(model)                     # FSDP2: fully_shard on each encoder, then on the whole model
    with gradient_sync(model, enabled=False):     # the micro-batches before the last one of an optimizer step
        loss.backward()
    states = full_states(model, optimizer)        # every rank calls it (FSDP gathers); full, name-keyed
    load_full_states(model, optimizer, states)    # into a plain, DDP or FSDP model: any strategy, any world size

Why our own FSDP wrapping and not Ray Train's ``prepare_model(parallel_strategy="fsdp")``: Ray 2.60 wraps the
whole model in FSDP1 (``FullyShardedDataParallel``) as one unit and raises without CUDA. FSDP2's ``fully_shard``
per encoder lets each encoder's parameters be gathered only while it runs (what makes a large backbone fit),
works over gloo on CPU (so the strategy is tested on any machine) and keeps the module's own class and
parameter names. DDP still goes through ``prepare_model`` (it moves the model and sets the CUDA device).

Checkpoints hold full state dicts keyed by parameter name (``torch.distributed.checkpoint.state_dict``): the
same file for DDP, FSDP and a single process, so a run resumes under another strategy or worker count and
``mm-ray evaluate`` loads a sharded run's checkpoint in one CPU process. The price is that rank 0 holds the
whole state in CPU memory while saving; sharded (per-rank) checkpoint files are not written yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from mm_ray.train.wrapping import unwrap


def parallelize(
    model: nn.Module,
    *,
    strategy: str,
    compile: bool,
    world_size: int,
    place: Callable[[nn.Module, bool], nn.Module],
    compile_backend: str = "inductor",
) -> nn.Module:
    """``model`` data parallel by ``strategy`` (``train.strategy``), then compiled when ``compile``.

    ``place(model, ddp)`` moves the model to the worker's device and wraps it in DDP when ``ddp`` (the Train
    worker passes Ray Train's ``prepare_model``); FSDP2 shards the placed model (one worker: nothing to
    shard, plain DDP placement). ``torch.compile`` comes last, over the wrapper, as PyTorch recommends for
    DDP and FSDP2; checkpoints read through it (``full_states``). ``compile_backend``: tests use "eager"
    (tracing without code generation: seconds instead of a minute on a small CPU)."""
    sharded = strategy == "fsdp" and world_size > 1
    model = shard_fsdp(place(model, False)) if sharded else place(model, True)
    return torch.compile(model, backend=compile_backend) if compile else model


def shard_fsdp(model: nn.Module) -> nn.Module:
    """``model`` sharded with FSDP2 in place: each module of its ``encoders`` ModuleDict is a unit of its own
    (gathered for its forward and backward only), the rest of the model the root unit. Build the optimizer
    after this: sharding replaces the parameters."""
    from torch.distributed.fsdp import fully_shard

    encoders = getattr(model, "encoders", None)
    if isinstance(encoders, nn.ModuleDict):
        for encoder in encoders.values():
            if any(True for _ in encoder.parameters()):
                fully_shard(encoder)
    fully_shard(model)
    return model


def is_fsdp(model: nn.Module) -> bool:
    """Whether ``model`` (or the module inside ``torch.compile``) was sharded by FSDP2."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(getattr(model, "_orig_mod", model), FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Backward passes inside sync gradients across workers only when ``enabled``: accumulation runs the
    micro-batches before the last one of an optimizer step without it (DDP ``no_sync``; FSDP2 keeps the
    unsharded gradients and reduce-scatters once). A no-op for a model that is not data parallel."""
    wrapped = getattr(model, "_orig_mod", model)
    if enabled:
        yield
    elif is_fsdp(wrapped):
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    elif hasattr(wrapped, "no_sync"):
        with wrapped.no_sync():
            yield
    else:
        yield


def local_param_fraction(model: nn.Module) -> float:
    """Elements of the parameters this rank holds over the model's full parameter count: 1.0 replicated
    (DDP, one process), about 1/world size under FSDP. A worker reports it, so a test can see the sharding."""
    local = full = 0
    for p in model.parameters():
        full += p.numel()
        local += p.to_local().numel() if hasattr(p, "to_local") else p.numel()
    return local / max(full, 1)


def _options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_states(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """``{"model", "optimizer"}`` as full state dicts on the CPU, keyed by parameter name (no ``module.`` or
    ``_orig_mod.`` prefix). Collective under FSDP: every rank must call it; the result is complete on rank 0
    (``cpu_offload`` leaves the other ranks empty dicts)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    sharded = is_fsdp(model)
    model = getattr(model, "_orig_mod", model) if sharded else unwrap(model)
    options = _options(cpu_offload=sharded)
    out: dict[str, Any] = {"model": get_model_state_dict(model, options=options)}
    if (
        not sharded
    ):  # already on the CPU for a CPU model; a GPU model's tensors are moved by torch.save's caller
        out["model"] = {k: v.detach().cpu() for k, v in out["model"].items()}
    if optimizer is not None:
        out["optimizer"] = get_optimizer_state_dict(model, optimizer, options=options)
    return out


def load_full_states(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, model_state: dict, optimizer_state: dict | None
) -> None:
    """Load full, name-keyed state dicts (``full_states``) into ``model`` (plain, DDP, FSDP, compiled) and
    ``optimizer``; each rank loads the whole file and keeps its own shard. Under FSDP torch turns the given
    dicts' tensors into shards in place: do not use them afterwards."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    model = getattr(model, "_orig_mod", model) if is_fsdp(model) else unwrap(model)
    set_model_state_dict(model, dict(model_state), options=_options())
    if optimizer is not None and optimizer_state is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=_options())

"""Metrics that merge across processes: each accumulator's state is a few tensors of sums.

    meter.update(...)                      # per batch, on any rank, over that rank's samples only
    all_reduce_metrics([meter, ...])       # every rank now holds the sums over all ranks' samples
    meter.result()                         # computed from the sums: equal to one process scoring it all

An accumulator (``Mergeable``) keeps only quantities that add up over disjoint sets of samples: loss sums,
counts of samples and of correct predictions, per-class counts. Anything else (a mean, an accuracy, a mAP)
is computed in ``result()`` from those sums, so scoring a validation set split across N workers gives the
same numbers as one process scoring it whole, up to float summation order. State shapes are fixed when the
accumulator is built (a per-class count vector has ``num_classes`` entries even on a rank that saw no
sample of some class), so every rank contributes tensors of the same shapes.

A task's own metrics plug in by implementing the three methods (``mm_ray.tasks``): regression keeps sums of
y, y^2, residual^2 and |residual| and the count; multi-label per-tag TP/FP/FN, and, for the exact average
precision, every sample's scores: a state entry whose name starts with ``ROWS_PREFIX`` holds one row per
sample and is concatenated over the ranks (in rank order) instead of summed. ``merge_states`` adds (and
concatenates) states that came back from several processes by other means (actors' return values) instead of
a collective.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch


class Mergeable(Protocol):
    """An accumulator whose state is a dict of tensors summed over samples (see the module docstring)."""

    def state(self) -> dict[str, torch.Tensor]:
        """The sums so far (tensors of shapes fixed at construction)."""
        ...

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the sums (with merged ones)."""
        ...

    def result(self) -> Any:
        """The metric computed from the sums."""
        ...


ROWS_PREFIX = "rows_"
"""State entries named so hold per-sample rows ``[n, ...]`` (any n per rank): gathered, not summed."""


def all_reduce_metrics(meters: Iterable[Mergeable], device: str | torch.device | None = None) -> None:
    """Sum every meter's state over the ranks of the default process group, in place (a no-op outside one).

    One collective per dtype: the states are packed into a flat tensor each (on ``device``: NCCL needs CUDA
    tensors), reduced, and unpacked. Every rank must call it with meters of the same kinds, in the same order.
    """
    import torch.distributed as dist

    meters = list(meters)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    states = [meter.state() for meter in meters]
    by_dtype: dict[torch.dtype, list[tuple[int, str, torch.Tensor]]] = {}
    for i, state in enumerate(states):
        for name, tensor in state.items():
            if name.startswith(ROWS_PREFIX):
                state[name] = gather_rows(tensor, device)
                continue
            by_dtype.setdefault(tensor.dtype, []).append((i, name, tensor))
    for dtype in sorted(by_dtype, key=str):  # the same order on every rank
        entries = by_dtype[dtype]
        target = torch.device(device) if device is not None else entries[0][2].device
        flat = torch.cat([t.reshape(-1).to(target) for _, _, t in entries])
        dist.all_reduce(flat)
        offset = 0
        for i, name, tensor in entries:
            states[i][name] = flat[offset : offset + tensor.numel()].view_as(tensor).to(tensor.device)
            offset += tensor.numel()
    for meter, state in zip(meters, states, strict=True):
        meter.load_state(state)


def merge_states(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise sum of several states of one accumulator kind (e.g. returned by scoring actors); the
    ``ROWS_PREFIX`` entries concatenated in order."""
    if not states:
        raise ValueError("merge_states: no states to merge")
    return {
        name: torch.cat([s[name].cpu() for s in states])
        if name.startswith(ROWS_PREFIX)
        else sum((s[name].cpu() for s in states[1:]), states[0][name].cpu())
        for name in states[0]
    }


def gather_rows(rows: torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """Every rank's ``rows`` (``[n_rank, ...]``, same trailing shape and dtype) concatenated in rank order, on
    every rank: the sizes are all-gathered first, then the rows padded to the largest."""
    import torch.distributed as dist

    target = torch.device(device) if device is not None else rows.device
    local = rows.to(target)
    world = dist.get_world_size()
    size = torch.tensor([local.shape[0]], dtype=torch.int64, device=target)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=target)
    padded[: local.shape[0]] = local
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)]).to(rows.device)


def lockstep(batches: Iterable[Any], device: str | torch.device) -> Iterator[Any]:
    """``batches``, then ``Padding`` copies of a batch until every rank has run out: for a model whose forward
    is collective (FSDP gathers parameters from every rank), the ranks scoring parts of different sizes must
    call it equally often. A rank whose part is empty pads with a batch another rank sends it once. One
    small all-reduce per batch; a no-op outside a process group."""
    import torch.distributed as dist

    from mm_ray.train.metrics import Padding

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        yield from batches
        return
    iterator = iter(batches)
    item = next(iterator, None)
    spare = _spare_batch(item, device)
    while True:
        more = torch.tensor([int(item is not None)], device=device)
        dist.all_reduce(more, op=dist.ReduceOp.MAX)
        if not more.item():
            return
        if item is not None:
            spare = item
            yield item
        else:
            yield Padding(spare)
        item = next(iterator, None)


def _spare_batch(first: Any, device: str | torch.device) -> Any:
    """``first``, or (for a rank with an empty part) the first batch of the lowest rank that has one."""
    import torch.distributed as dist

    has = torch.tensor([int(first is not None)], device=device)
    flags = [torch.zeros_like(has) for _ in range(dist.get_world_size())]
    dist.all_gather(flags, has)
    owners = [rank for rank, flag in enumerate(flags) if flag.item()]
    if not owners or len(owners) == len(flags):
        return first
    shared = [first if dist.get_rank() == owners[0] else None]
    dist.broadcast_object_list(shared, src=owners[0])
    return first if first is not None else shared[0]

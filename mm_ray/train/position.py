"""Where an epoch stands: the samples it has trained, so a resumed run continues mid-epoch without repeating
or skipping one.

    tracker = PositionTracker(epoch, restored)        # restored: the checkpoint's DataPosition, or None
    tracker.add(step_batches)                         # after every optimizer step: its micro-batches' ids
    position = tracker.gather(global_step=..., steps_in_epoch=..., sums=..., good_samples=...)  # all ranks
    state = position.to_state()                       # plain tensors and lists, in the step checkpoint
    DataPosition.from_state(state).trained            # sorted int64 ids (mm_ray.data.sample_ids)

Why a set of sample ids and not an index into the epoch's order: Ray Data hands blocks to the workers as
they ask (``streaming_split``) and each worker shuffles rows through a local buffer, so what was trained is
not a prefix of any fixed order. The set is exact whatever the split did. The epoch's seeded order still
decides everything else: the resumed epoch reads the same blocks (cache) or shards (streaming) in the
same order, less what was trained (``mm_ray.train.datasets``).

Streaming from shards, a shard all of whose good samples were trained (the quarantine ledger knows how many
passed, ``QuarantineLedger.good_samples``) is listed in ``shards_done`` and not read again; the ids of its
samples leave the set. In cache mode there are no shards to finish: the set holds every trained id
(8 bytes a sample, e.g. 8 MB for a million-sample epoch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from mm_ray.data.sample_ids import SAMPLE_ID, SHARD_ID, shard_ids


@dataclasses.dataclass(frozen=True)
class DataPosition:
    """A step checkpoint's place in the data (an epoch-end checkpoint has none: the next epoch starts fresh)."""

    epoch: int
    """The epoch in progress, 0-based."""
    global_step: int
    """Optimizer steps of the run when it was saved."""
    steps_in_epoch: int
    """Optimizer steps of this epoch when it was saved (every rank takes the same)."""
    trained: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Sorted ids of the samples trained this epoch, on every rank (less those of ``shards_done``)."""
    trained_shards: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """The shard id of each of ``trained`` (0 where unknown: cache rows)."""
    shards_done: tuple[str, ...] = ()
    """Streaming: shards whose every good sample was trained this epoch (skipped on resume)."""
    sums: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """The epoch's training sums so far over all ranks (``samples``, ``loss_sum``, ``correct``, ``seconds``):
    the resumed epoch's metrics cover the whole epoch."""

    def to_state(self) -> dict[str, Any]:
        """Plain data for ``torch.save`` / ``torch.load(weights_only=True)``."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "steps_in_epoch": self.steps_in_epoch,
            "trained": torch.from_numpy(np.ascontiguousarray(self.trained, dtype=np.int64)),
            "trained_shards": torch.from_numpy(np.ascontiguousarray(self.trained_shards, dtype=np.int64)),
            "shards_done": list(self.shards_done),
            "sums": {k: float(v) for k, v in self.sums.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DataPosition:
        return cls(
            epoch=int(state["epoch"]),
            global_step=int(state["global_step"]),
            steps_in_epoch=int(state["steps_in_epoch"]),
            trained=np.asarray(state["trained"], dtype=np.int64),
            trained_shards=np.asarray(state["trained_shards"], dtype=np.int64),
            shards_done=tuple(state["shards_done"]),
            sums=dict(state["sums"]),
        )


class PositionTracker:
    """The ids one rank trained this epoch (``add`` after each optimizer step), merged with a restored
    position of the same epoch, gathered from every rank at a step checkpoint (``gather``)."""

    def __init__(self, epoch: int, restored: DataPosition | None = None) -> None:
        self.epoch = epoch
        self.restored = restored if restored is not None and restored.epoch == epoch else None
        self._ids: list[np.ndarray] = []
        self._shards: list[np.ndarray] = []

    def add(self, batches: Iterable[Mapping[str, Any]]) -> None:
        """Record the ids of one optimizer step's micro-batches (raw batches holding ``SAMPLE_ID``)."""
        for batch in batches:
            if SAMPLE_ID not in batch:
                continue
            ids = _numpy(batch[SAMPLE_ID])
            self._ids.append(ids)
            self._shards.append(_numpy(batch[SHARD_ID]) if SHARD_ID in batch else np.zeros_like(ids))

    def local_ids(self) -> np.ndarray:
        """This rank's ids since this attempt began (the sample log writes them)."""
        return np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)

    def gather(
        self,
        *,
        global_step: int,
        steps_in_epoch: int,
        sums: Mapping[str, float],
        good_samples: Mapping[str, int] | None = None,
    ) -> DataPosition:
        """The epoch's position over every rank (a collective: all ranks call it). ``good_samples``: the
        ledger's samples that passed per finished shard (streaming): shards trained to their last good
        sample go to ``shards_done``."""
        import torch.distributed as dist

        mine = (self.local_ids(), np.concatenate(self._shards) if self._shards else np.zeros(0, np.int64))
        parts = [mine]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, mine)
        ids = [p[0] for p in parts]
        shards = [p[1] for p in parts]
        done = set(self.restored.shards_done) if self.restored else set()
        if self.restored is not None:
            ids.append(self.restored.trained)
            shards.append(self.restored.trained_shards)
        ids_all, shards_all = np.concatenate(ids), np.concatenate(shards)
        if good_samples:
            done |= finished_shards(shards_all, good_samples)
        keep = ~np.isin(shards_all, shard_ids(sorted(done))) if done else slice(None)
        order = np.argsort(ids_all[keep], kind="stable")
        return DataPosition(
            epoch=self.epoch,
            global_step=global_step,
            steps_in_epoch=steps_in_epoch,
            trained=ids_all[keep][order],
            trained_shards=shards_all[keep][order],
            shards_done=tuple(sorted(done)),
            sums=dict(sums),
        )


def finished_shards(trained_shards: np.ndarray, good_samples: Mapping[str, int]) -> set[str]:
    """The shards (URLs) of which ``trained_shards`` (one shard id per trained sample) holds every good sample."""
    if not len(trained_shards):
        return set()
    ids, counts = np.unique(trained_shards, return_counts=True)
    trained = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    urls = sorted(good_samples)
    return {
        url
        for url, sid in zip(urls, shard_ids(urls).tolist(), strict=True)
        if good_samples[url] > 0 and trained.get(sid, 0) >= good_samples[url]
    }


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.cpu().numpy()
    return np.asarray(value, dtype=np.int64).reshape(-1)


def rng_state() -> dict[str, Any]:
    """This process's RNG states (Python, numpy, torch, CUDA) as plain data for a checkpoint."""
    import random

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore ``rng_state()``'s states in this process."""
    import random

    version, mt, gauss_next = state["python"]
    random.setstate((version, tuple(mt), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])

"""How the Train workers split the datasets: training equally, validation row for row.

    TorchTrainer(..., dataset_config=SplitConfig(split=["train", "train_resume"], whole_rows=["val"]))

Training splits must be equal (``streaming_split(equal=True)``, Ray's default): DDP and FSDP workers take
their optimizer steps together, so every worker needs as many batches; Ray may leave up to ``workers - 1``
rows of an epoch out for that. Validation is scored by every worker on its part and the sums added up
(``mm_ray.train.mergeable``), so it must see every row exactly once: ``equal=False``, parts of any size. A
validation set already in memory is split by blocks once (``split``: each worker iterates its own blocks, no
coordinator actor between); a streamed one with ``streaming_split``.
Overriding ``DataConfig.configure`` is the documented way to change the split (a DeveloperAPI).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray.train
from ray.data.dataset import MaterializedDataset


class SplitConfig(ray.train.DataConfig):
    """``split`` datasets equally across the workers, ``whole_rows`` datasets into parts holding every row
    once; the others unsplit (every worker iterates all of it)."""

    def __init__(
        self, split: Sequence[str] = (), whole_rows: Sequence[str] = (), ordered: Sequence[str] = ()
    ) -> None:
        """``ordered``: datasets read in order (``preserve_order``): a run read in one execution, whose epochs
        must follow one another (``mm_ray.train.epoch_stream``)."""
        options = None
        if ordered:
            in_order = ray.train.DataConfig.default_ingest_options()  # this driver's memory limits
            in_order.preserve_order = True
            options = {name: in_order for name in ordered}
        super().__init__(datasets_to_split=[*split, *whole_rows], execution_options=options)
        self._whole_rows = set(whole_rows)

    def configure(
        self,
        datasets: dict[str, Any],
        world_size: int,
        worker_handles: Any,
        worker_node_ids: Any,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        equal = {name: ds for name, ds in datasets.items() if name not in self._whole_rows}
        output = super().configure(equal, world_size, worker_handles, worker_node_ids, **kwargs)
        hints = worker_node_ids if self._enable_shard_locality else None
        for name, ds in datasets.items():
            if name not in self._whole_rows:
                continue
            if ds.name is None:
                ds.set_name(name)
            if isinstance(ds, MaterializedDataset):
                # Blocks already in the object store (a cache kept in memory): each worker gets a fixed run of
                # them and iterates it itself, with no split coordinator between it and the blocks.
                parts = [part.iterator() for part in ds.split(world_size, equal=False)]
            else:
                ds = ds.copy(ds)
                ds.context.execution_options = self._resolve_execution_options(name)
                parts = ds.streaming_split(world_size, equal=False, locality_hints=hints)
            for rank, part in enumerate(parts):
                output[rank][name] = part
        return output

"""The training datasets, built at every worker-group start from where the run's latest checkpoint stands.

    datasets = TrainDatasets(recipe, run_storage, sample_ids=True).for_trainer()
    TorchTrainer(..., datasets={**datasets, "val": val})   # "train" and "train_resume" are functions

Ray Train V2 takes a function in place of a dataset and calls it (in the Train controller) when each worker
group starts: the first time, and again after every failure it recovers from (``train.max_failures``). The
functions here read the latest checkpoint's data position (``position.pt``, ``mm_ray.train.position``; a
run with none starts at epoch 0) and build, from the same ``recipe`` (a cache or the ingest pipeline):

- ``train``: the epochs after the position, each in the order an uninterrupted run gives it (the dataset's
  execution index starts at that epoch, ``mm_ray.data.epochs``), read every epoch by every worker;
- ``train_resume``: the rest of the epoch a step checkpoint interrupted, in that epoch's order, less the
  samples the position lists as trained (finished shards are not opened, trained samples not decoded). The
  workers read it for that one epoch instead of ``train``; without an interrupted epoch it is empty.

A restart inside a run therefore continues the shard order where it stood; before, its datasets were the
driver's as first built, and epoch k after a restart replayed epoch 0's order. Public Ray API: the
``datasets`` argument accepts ``Callable[[], Dataset]`` (``GenDataset`` in Train V2).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Protocol

from mm_ray.data.epochs import shuffled_per_epoch
from mm_ray.data.sample_ids import Resume
from mm_ray.train.position import DataPosition

RESUME_DATASET = "train_resume"


class Recipe(Protocol):
    """Builds the training stream: ``mm_ray.data.pipeline.StreamRecipe`` or ``CacheRecipe``."""

    def build(self, first_epoch: int = 0, *, sample_ids: bool = False, resume: Any = None) -> Any: ...


@dataclasses.dataclass(frozen=True)
class CacheRecipe:
    """The training rows of a preprocessed cache (``Cache.dataset`` with a run's settings), buildable again."""

    cache: Any
    columns: list[str]
    in_memory: bool
    shuffle_seed: int | None
    limit: int | None
    rows: tuple[bool, Any] | None = None
    """In memory: ``(sample_ids, dataset)``, the rows already in the object store (``with_rows_in_memory``)."""

    def with_rows_in_memory(self, sample_ids: bool) -> CacheRecipe:
        """This recipe with an in-memory cache's rows put into the object store now, by the caller.

        Ray Train calls ``build`` in its controller once the worker group holds its CPUs, and
        ``ray.data.from_arrow`` starts a 1-CPU task per block there (the blocks' metadata): in a sweep whose
        trials hold every CPU but Ray Data's share that task never starts and the trial waits for ever. Built
        by the run's driver before the trainer asks for its workers, the controller only reorders blocks."""
        if not self.in_memory:
            return self
        ds = self.cache.dataset(columns=self.columns, in_memory=True, limit=self.limit, sample_ids=sample_ids)
        return dataclasses.replace(self, rows=(sample_ids, ds))

    def build(self, first_epoch: int = 0, *, sample_ids: bool = False, resume: Any = None) -> Any:
        if self.rows is not None and resume is None and self.rows[0] == sample_ids:
            ds = self.rows[1]
            return ds if self.shuffle_seed is None else shuffled_per_epoch(ds, self.shuffle_seed, first_epoch)
        return self.cache.dataset(
            columns=self.columns,
            in_memory=self.in_memory,
            shuffle_seed=self.shuffle_seed,
            limit=self.limit,
            first_epoch=first_epoch if self.shuffle_seed is not None else 0,
            sample_ids=sample_ids,
            resume=resume,
        )


@dataclasses.dataclass(frozen=True)
class TrainDatasets:
    """``train`` and ``train_resume`` as functions of the run's latest data position (module docstring).

    ``run_storage``: the run's Ray Train directory (None in local mode: no checkpoints); ``sample_ids``: rows
    carry their ``sample_id`` (needed by step checkpoints and the sample log); ``limit``: the first this many
    samples of a stream (``train.limit_samples``; a cache limits itself)."""

    recipe: Recipe
    run_storage: str | None
    sample_ids: bool = False
    limit: int | None = None

    def train(self) -> Any:
        position = latest_position(self.run_storage)
        first = 0 if position is None else position.epoch + (1 if position.steps_in_epoch else 0)
        return self._limited(self.recipe.build(first, sample_ids=self.sample_ids), 0)

    def train_resume(self) -> Any:
        position = latest_position(self.run_storage)
        if position is None or not position.steps_in_epoch:
            return empty_dataset()
        resume = Resume(position.trained, position.shards_done)
        ds = self.recipe.build(position.epoch, sample_ids=self.sample_ids, resume=resume)
        return self._limited(ds, int(position.sums.get("samples", 0)))

    def _limited(self, ds: Any, trained: int) -> Any:
        return ds.limit(max(0, self.limit - trained)) if self.limit else ds

    def for_trainer(self) -> dict[str, Any]:
        """The ``datasets`` entries for ``TorchTrainer`` (bound methods: Ray calls them at each start)."""
        return {"train": self.train, RESUME_DATASET: self.train_resume}


def empty_dataset() -> Any:
    """What ``train_resume`` is when no epoch was interrupted (the workers never read it)."""
    import ray.data

    return ray.data.from_items([])


def latest_position(run_storage: str | None) -> DataPosition | None:
    """The data position of the run's latest registered checkpoint: its ``position.pt``; for a checkpoint
    written before positions existed, the start of the epoch after its ``epoch`` metric; None for a run
    without checkpoints (or local mode)."""
    if not run_storage:
        return None
    import ray.train
    import torch

    from mm_ray.train.checkpoint import POSITION_FILE

    try:
        # Raises when the folder or Ray Train's checkpoint-manager snapshot in it does not exist yet.
        result = ray.train.Result.from_path(run_storage)
    except (RuntimeError, FileNotFoundError):
        return None
    checkpoint = result.checkpoint
    if checkpoint is None:
        return None
    fs = checkpoint.filesystem
    try:
        with fs.open_input_file(f"{checkpoint.path}/{POSITION_FILE}") as f:
            data = f.read()
    except (FileNotFoundError, OSError):
        epoch = int((result.metrics or {}).get("epoch", 0))
        return DataPosition(epoch=epoch, global_step=0, steps_in_epoch=0)
    return DataPosition.from_state(torch.load(io.BytesIO(data), weights_only=True))

"""Per-epoch shuffling that survives a resume: epoch k visits the data in the same order whether the run got
there without a break or resumed from epoch k's checkpoint.

    ds = shuffled_per_epoch(ds, seed=cfg.train.seed, first_epoch=finished)   # blocks in a new order each epoch
    epoch_order(urls, seed, epoch)    # the shard order of one epoch of a run read in one execution

``epoch_order`` is a function of ``(seed, epoch)`` alone: a stream that lists every epoch's shards up front
(``train.one_execution``) and a resumed run that lists only the epochs left give epoch k the same order.

Ray Data reseeds a shuffle with ``(seed, execution index)``, the index counting the dataset's executions in
the process that runs them (one execution per training epoch). A resumed run builds a new dataset whose
index starts at 0, so without ``first_epoch`` its first epoch would replay epoch 0's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def shuffled_per_epoch(ds: Any, seed: int, first_epoch: int = 0) -> Any:
    """``ds`` with its blocks in a new seeded order every execution; execution ``i`` uses the order of epoch
    ``first_epoch + i`` of an uninterrupted run."""
    import ray.data

    ds = ds.randomize_block_order(seed=ray.data.RandomSeedConfig(seed=seed, reseed_after_execution=True))
    return starting_at_epoch(ds, first_epoch)


def starting_at_epoch(ds: Any, first_epoch: int) -> Any:
    """``ds`` (already reseeded after every execution, e.g. ``read_parquet(shuffle=FileShuffleConfig(...))``)
    counting its executions from ``first_epoch``. Returns ``ds`` itself."""
    if first_epoch < 0:
        raise ValueError(f"first_epoch must be >= 0, got {first_epoch}")
    # Ray has no public way to start the execution index elsewhere than 0 (it was added without one by
    # ray-project/ray#59528). It lives in the dataset's own DataContext, which travels with the dataset when it
    # is pickled to a Train worker or a streaming-split coordinator, and is incremented there per execution.
    ds.context._execution_idx = first_epoch
    return ds


EPOCH = "__epoch__"
"""int32 column of a stream read in one execution for several epochs: the epoch a row belongs to (the decoding
actors copy it from their input row; ``mm_ray.train.epoch_stream`` cuts the stream at its changes)."""


def epoch_order(urls: Sequence[str], seed: int | None, epoch: int) -> list[str]:
    """``urls`` in epoch ``epoch``'s order: a permutation drawn from ``(seed, epoch)``; as given when ``seed`` is
    None (no shuffling)."""
    if seed is None:
        return list(urls)
    order = np.random.default_rng([seed, epoch]).permutation(len(urls))
    return [urls[i] for i in order]

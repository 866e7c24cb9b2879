"""Numeric sample ids: which samples a training step consumed, without carrying strings into the workers.

    ids = sample_ids(shards, keys)          # int64 >= 0, one per row: a hash of (shard URL, sample key)
    table = with_sample_ids(table)          # an Arrow block gains SAMPLE_ID (and SHARD_ID) from its strings
    table = drop_trained(table, trained)    # the rows whose id is not in the sorted int64 array ``trained``

The Train workers turn every numeric column into tensors and drop strings (``__key__``, ``__shard__``), so a
sample is named by a number: the first 63 bits of BLAKE2b over ``shard + NUL + key``. Two samples of one run
share an id with probability about n^2 / 2^64 (n = 10^7 samples: 5 x 10^-6), the price of not shipping
strings. ``SHARD_ID`` is the same hash of the shard URL alone: a streaming run counts the samples trained per
shard with it, to tell the shards it has finished (``mm_ray.train.position``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mm_ray.columns import KEY, SHARD

SAMPLE_ID = "sample_id"
"""int64 id of a row: ``sample_ids(shard, key)``."""
SHARD_ID = "shard_id"
"""int64 id of a row's shard: ``shard_ids(shard)``."""
ID_COLUMNS = (SAMPLE_ID, SHARD_ID)


def _hash63(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def sample_ids(shards: Iterable[str], keys: Iterable[str]) -> np.ndarray:
    """The int64 id of each (shard, key) pair."""
    return np.fromiter((_hash63(f"{s}\0{k}") for s, k in zip(shards, keys, strict=True)), dtype=np.int64)


def shard_ids(shards: Iterable[str]) -> np.ndarray:
    """The int64 id of each shard URL."""
    return np.fromiter((_hash63(s) for s in shards), dtype=np.int64)


def with_sample_ids(table: pa.Table, *, shard_column: bool = False) -> pa.Table:
    """``table`` (holding ``__key__`` and ``__shard__``) with ``SAMPLE_ID`` appended, and ``SHARD_ID`` when
    ``shard_column``; the strings stay (the caller drops them)."""
    shards = table.column(SHARD).to_pylist()
    table = table.append_column(SAMPLE_ID, pa.array(sample_ids(shards, table.column(KEY).to_pylist())))
    if shard_column:
        table = table.append_column(SHARD_ID, pa.array(shard_ids(shards)))
    return table


def drop_trained(table: pa.Table, trained: np.ndarray) -> pa.Table:
    """The rows of ``table`` whose ``SAMPLE_ID`` (computed from key and shard when absent) is not in
    ``trained``; ``table`` itself when none is."""
    if not len(trained) or table.num_rows == 0:
        return table
    ids = (
        table.column(SAMPLE_ID).to_numpy()
        if SAMPLE_ID in table.column_names
        else sample_ids(table.column(SHARD).to_pylist(), table.column(KEY).to_pylist())
    )
    done = np.isin(ids, trained, assume_unique=False)
    return table if not done.any() else table.filter(pc.invert(pa.array(done)))


class Resume:
    """What a resumed epoch leaves out: the ``trained`` ids (sorted int64) and whole ``shards_done`` (URLs,
    streaming). Read tasks and decoding actors get it with their other arguments: trained samples are
    dropped before they are decoded, finished shards are not opened."""

    def __init__(self, trained: np.ndarray, shards_done: Iterable[str] = ()) -> None:
        self.trained = np.sort(np.asarray(trained, dtype=np.int64))
        self.shards_done = frozenset(shards_done)

    def __bool__(self) -> bool:
        return bool(len(self.trained) or self.shards_done)

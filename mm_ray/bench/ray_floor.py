"""(d) of ``mm-ray bench ingest``: the simplest Ray Data pipeline with the benchmark's decode code, and nothing
of mm_ray's pipeline around it (no ledger, no Arrow stages, no block sizing, no resource plan beyond the pool
size):

    ray.data.from_items([{"url": u} for u in urls])
        .map_batches(ShardDecoder, fn_constructor_kwargs=..., batch_size=1,
                     compute=ActorPoolStrategy(size=n), num_cpus=c)

``ShardDecoder`` parses each shard with the reader the floor (a) uses and decodes it with ``BatchDecoder`` (the
preprocessors the pools run), yielding numpy batches. The pool has the size and CPUs of (c)'s first pool, so
c/d is what mm_ray adds to Ray Data, and d/b what Ray Data costs over a DataLoader with the same decoders.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from mm_ray.bench.baselines import BatchDecoder, Decoders
from mm_ray.data.members import MemberMap, assemble
from mm_ray.data.raw import RawSample
from mm_ray.data.tar_stream import iter_shard

URL = "url"


class ShardDecoder:
    """Whole shards in, decoded numpy batches of ``batch_size`` rows out (one actor's work in mode (d))."""

    def __init__(self, decoders: Decoders, members: MemberMap, batch_size: int):
        self._decode = BatchDecoder(decoders)
        self._members = members
        self._batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for url in batch[URL]:
            rows: list[dict[str, Any]] = []
            for item in iter_shard(str(url)):
                if isinstance(item, RawSample):
                    row, _ = assemble(item, self._members)
                    if row is not None:
                        rows.append(row)
                if len(rows) == self._batch_size:
                    yield self._decode(rows)
                    rows = []
            if rows:
                yield self._decode(rows)


def floor_dataset(
    urls: list[str], decoders: Decoders, members: MemberMap, *, batch_size: int, actors: int, num_cpus: float
) -> Any:
    """The lazy dataset of mode (d): one input row per shard, ``actors`` actors of ``num_cpus`` CPUs each."""
    import ray.data

    return ray.data.from_items([{URL: u} for u in urls], override_num_blocks=max(1, len(urls))).map_batches(
        ShardDecoder,
        fn_constructor_kwargs={"decoders": decoders, "members": members, "batch_size": batch_size},
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=num_cpus,
        batch_size=1,
    )

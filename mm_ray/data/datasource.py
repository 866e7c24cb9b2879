"""A Ray Data datasource that reads webdataset shards: one read task per shard.

Each read task streams its tar file (local or object storage) with ``tar_stream.iter_samples``,
maps members to modalities with ``members.assemble`` and yields Arrow blocks of raw bytes
(see ``mm_ray.columns``). Nothing is decoded here: decoding belongs to the per-modality
actor pools, which is what lets each modality scale on its own.

Bad samples and shard problems go to the quarantine ledger actor; read progress too, so the
driver can show a progress bar and check the error budget while the run streams.

Usage (inside ``mm_ray.data.pipeline``)::

    ds = ray.data.read_datasource(ShardDatasource(urls, members=MemberMap(), ledger=ledger),
                                  override_num_blocks=len(urls), num_cpus=0.25)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask
from ray.data.extensions import ArrowTensorArray

from mm_ray import columns as C
from mm_ray.data.ledger import raise_if_over_budget
from mm_ray.data.members import MemberMap, assemble
from mm_ray.data.raw import RawSample
from mm_ray.data.sample_ids import drop_trained
from mm_ray.data.tar_stream import iter_shard
from mm_ray.modalities.spec import presence_column, raw_column
from mm_ray.quarantine import QuarantineRecord


def raw_schema(modalities: tuple[str, ...], label_width: int = 0) -> pa.Schema:
    """The reader's columns for ``modalities``: key, shard, each modality's bytes, label, each presence flag.
    The label is an int64 class id, or (``label_width`` > 0: multilabel, regression) a float32 vector."""
    return pa.schema(
        [
            (C.KEY, pa.string()),
            (C.SHARD, pa.string()),
            *((raw_column(m), pa.binary()) for m in modalities),
            (C.LABEL, label_type(label_width)),
            *((presence_column(m), pa.bool_()) for m in modalities),
        ]
    )


def label_type(width: int) -> pa.DataType:
    """The label column's Arrow type: int64, or Ray's fixed-shape tensor of ``width`` float32 (what the
    model-ready columns use, so the cache and the Train workers read it as a ``[B, width]`` tensor)."""
    if not width:
        return pa.int64()
    return ArrowTensorArray.from_numpy(np.zeros((1, width), np.float32)).type


class ShardDatasource(Datasource):
    """Reads a list of shard URLs (already expanded by ``sources.expand_shards``)."""

    def __init__(
        self,
        shards: list[str],
        *,
        members: MemberMap,
        ledger: Any = None,
        storage_options: dict[str, str] | None = None,
        rows_per_block: int = 64,
        resume: Any = None,
    ):
        super().__init__()
        # A resumed epoch (mm_ray.data.sample_ids.Resume): finished shards are not read, trained samples dropped.
        self._resume = resume
        self._shards = [u for u in shards if resume is None or u not in resume.shards_done]
        self._members = members
        self._ledger = ledger
        self._storage_options = dict(storage_options or {})
        self._rows_per_block = rows_per_block

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        # One task per shard: a tar stream cannot be split, and per-shard tasks keep
        # progress and failures attributable to a shard name.
        return [
            ReadTask(
                self._read_fn(url),
                BlockMetadata(num_rows=None, size_bytes=None, input_files=[url], exec_stats=None),
                schema=raw_schema(self._members.modalities, self._members.label_width),
                per_task_row_limit=per_task_row_limit,
            )
            for url in self._shards
        ]

    def _read_fn(self, url: str):
        members, ledger, options, rows, resume = (
            self._members,
            self._ledger,
            self._storage_options,
            self._rows_per_block,
            self._resume,
        )

        def read() -> Iterator[pa.Table]:
            for block in read_shard_blocks(url, members, ledger, options, rows):
                yield drop_trained(block, resume.trained) if resume else block

        return read


def read_shard_blocks(
    url: str, members: MemberMap, ledger: Any, storage_options: dict[str, str], rows_per_block: int
) -> Iterator[pa.Table]:
    """Yield Arrow blocks of raw samples from one shard, reporting problems to ``ledger``."""
    report = _Reporter(url, ledger)
    schema = raw_schema(members.modalities, members.label_width)
    rows: list[dict[str, Any]] = []
    for item in iter_shard(url, storage_options=storage_options, members=members):
        if isinstance(item, RawSample):
            report.samples += 1
            row, recs = assemble(item, members)
            report.records(recs)
            if row is not None:
                rows.append(row)
        else:
            # A truncated or non-contiguous fragment is a sample that was read and set aside.
            report.samples += int(item.is_sample)
            report.records([item])
        if len(rows) >= rows_per_block:
            yield rows_to_table(rows, schema)
            rows = []
            report.progress()
    if rows:
        yield rows_to_table(rows, schema)
    report.finish()


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Assembled row dicts -> one Arrow table with the raw ``schema`` (column order fixed)."""
    columns = {name: [row[name] for row in rows] for name in schema.names}
    if schema.field(C.LABEL).type != pa.int64():  # vector labels: one [rows, width] tensor column
        columns[C.LABEL] = ArrowTensorArray.from_numpy(np.stack(columns[C.LABEL]).astype(np.float32))
    return pa.table(columns, schema=schema)


class _Reporter:
    """Batches ledger calls for one shard. Without a ledger (plain use, tests) it only counts."""

    def __init__(self, shard: str, ledger: Any):
        self.shard = shard
        self.ledger = ledger
        self.samples = 0
        self._pending: list[dict[str, str]] = []
        self._last_report = 0.0

    def records(self, recs: list[QuarantineRecord]) -> None:
        self._pending.extend(r.to_json() for r in recs)

    def progress(self) -> None:
        # At most one ledger call a second per shard: the progress bar needs no more, and each call
        # costs the ledger actor CPU that the decoders could use.
        now = time.monotonic()
        if self.ledger is None or now - self._last_report < 1.0:
            return
        self._last_report = now
        if self._pending:
            self.ledger.add.remote(self._pending)
            self._pending = []
        self.ledger.shard_progress.remote(self.shard, self.samples)

    def finish(self) -> None:
        if self.ledger is None:
            return
        from mm_ray.data.ledger import ledger_get  # Ray only here: the reader works without it

        # Wait for the final calls so the driver's summary, taken after the stream ends, is complete.
        ledger_get(self.ledger.add.remote(self._pending))
        self._pending = []
        raise_if_over_budget(ledger_get(self.ledger.shard_progress.remote(self.shard, self.samples, True)))

"""Prediction rows written as one Parquet file per input shard, each whole or not at all: what makes ``predict``
resumable (a re-run reads only the shards without a file) and its memory bounded (rows are held only for the
shards still in flight).

    outputs = ShardOutputs("s3://bucket/predictions", storage_options)
    todo = [url for url in urls if not outputs.done(url)]
    for batch in batches:                      # rows of any shards, in any order
        outputs.add(batch)
        outputs.flush_complete(good_samples)   # ledger: shard -> samples that passed every check (read to its end)
    outputs.close(good_samples)                # the rest, and an empty file for a shard whose samples all failed

A shard's file is written once every sample of it that passed the checks has come back: the quarantine ledger
knows that count as soon as the shard was read to its end (``QuarantineLedger.good_samples``), and the stages
report their rejects before they pass a batch on, so the count is never reached early. An unreadable shard gets
no file (a re-run tries it again). The file name is the shard's name plus a digest of its whole URL (two
``000.tar`` in different folders do not collide).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mm_ray.columns import SHARD
from mm_ray.data.sources import SHARD_SUFFIXES, filesystem_for

SUFFIX = ".parquet"


def output_name(url: str) -> str:
    """The file name of ``url``'s predictions: ``<shard name>-<8 hex digits of the URL>.parquet``."""
    base = posixpath.basename(url.rstrip("/"))
    stem = next((base[: -len(s)] for s in SHARD_SUFFIXES if base.endswith(s)), base)
    return f"{stem}-{hashlib.sha1(url.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}{SUFFIX}"


def to_arrow(batch: Mapping[str, np.ndarray]) -> pa.Table:
    """A numpy batch -> an Arrow table; ``[B, D]`` columns become fixed-size lists (plain Parquet, readable by
    any Parquet reader)."""
    arrays = {}
    for name, values in batch.items():
        values = np.asarray(values)
        if values.ndim == 2:
            flat = pa.array(np.ascontiguousarray(values).reshape(-1))
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        else:
            arrays[name] = pa.array(values.tolist() if values.dtype == object else values)
    return pa.table(arrays)


class ShardOutputs:
    """The output directory ``out`` (a local path or ``s3://``) of a predict run."""

    def __init__(self, out: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.fs, self.path = filesystem_for(out, dict(storage_options or {}))
        self.fs.create_dir(self.path, recursive=True)
        existing = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        self._written = {posixpath.basename(f.path) for f in existing if f.type == pafs.FileType.File}
        self._rows: dict[str, list[pa.Table]] = defaultdict(list)
        self._counts: dict[str, int] = defaultdict(int)
        self._schema: pa.Schema | None = None
        self.files_written = 0
        self.rows_written = 0

    def done(self, url: str) -> bool:
        """Whether ``url``'s file is there already (written whole by an earlier run)."""
        return output_name(url) in self._written

    def add(self, batch: Mapping[str, np.ndarray]) -> None:
        """Hold ``batch``'s rows (with their ``__shard__`` column) until their shard is complete."""
        shards = np.asarray(batch[SHARD])
        if len(shards) == 0:
            return
        table = to_arrow({k: v for k, v in batch.items() if k != SHARD})
        self._schema = self._schema or table.schema
        for shard in np.unique(shards):
            rows = np.flatnonzero(shards == shard)
            self._rows[str(shard)].append(table.take(pa.array(rows)))
            self._counts[str(shard)] += len(rows)

    def pending(self) -> list[str]:
        """Shards with rows held."""
        return list(self._rows)

    def flush_complete(self, good_samples: Mapping[str, int]) -> None:
        """Write every held shard whose rows have all come back (``good_samples``: the ledger's counts)."""
        for shard in list(self._rows):
            if shard in good_samples and self._counts[shard] >= good_samples[shard]:
                self._write(shard)

    def close(self, good_samples: Mapping[str, int]) -> None:
        """After the stream: write every shard held, and an empty file for each shard read to its end whose
        samples were all quarantined (so a re-run does not read it again)."""
        for shard in list(self._rows):
            self._write(shard)
        for shard, good in good_samples.items():
            if good == 0 and not self.done(shard) and self._schema is not None:
                self._rows[shard] = [self._schema.empty_table()]
                self._write(shard)

    def _write(self, shard: str) -> None:
        table = pa.concat_tables(self._rows.pop(shard))
        self._counts.pop(shard, None)
        name = output_name(shard)
        target = f"{self.path}/{name}"
        # Whole or not at all: a local file is written under a hidden name and renamed; an object store's upload
        # becomes visible only when it completes.
        local = isinstance(self.fs, pafs.LocalFileSystem)
        path = f"{self.path}/.{name}.tmp-{os.getpid()}" if local else target
        with self.fs.open_output_stream(path) as f:
            pq.write_table(table, f)
        if local:
            self.fs.move(path, target)
        self._written.add(name)
        self.files_written += 1
        self.rows_written += table.num_rows

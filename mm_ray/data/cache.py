"""The preprocessed cache: model-ready rows as Parquet plus a manifest, written once, read by every run.

Layout of a cache (a local directory or an ``s3://bucket/prefix``)::

    CACHE/data/*.parquet       model-ready rows (each modality's columns, labels, presence masks)
    CACHE/tokenizer.json       the tokenizer the text column was made with
    CACHE/quarantine.jsonl     one line per quarantined sample / ignored member / shard problem
    CACHE/manifest.json        counts, quarantine summary, shapes, config hash, source shards

``Cache`` is the one owner of that layout::

    cache = Cache.open("runs/demo/cache/train")           # or "s3://bucket/caches/train", storage_options=...
    cache.manifest.samples_ok, cache.shapes, cache.tokenizer_json     # the manifest: mm_ray.data.manifest
    ds = cache.dataset()                                   # the rows as a Ray dataset

Every file goes through a ``pyarrow.fs`` filesystem (``mm_ray.data.sources.filesystem_for``), so a cache in
object storage works like a local one. Writing (``mm_ray.data.build.build_cache``) removes the manifest
first and writes it last: a cache whose writing did not finish has no manifest, and ``Cache.open`` refuses it
by name. The config hash covers every setting that changes the bytes of the cache, so a consumer can tell
whether a cache matches its config.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from mm_ray.columns import KEY, SHARD
from mm_ray.data.epochs import shuffled_per_epoch, starting_at_epoch
from mm_ray.data.manifest import CacheManifest, PreprocessingRecord
from mm_ray.data.sources import S3_PREFIX, filesystem_for
from mm_ray.modalities.legacy import manifest_shapes
from mm_ray.modalities.registry import BUILTIN, Registry
from mm_ray.records import RecordError

MANIFEST = "manifest.json"
DATA = "data"
QUARANTINE_LOG = "quarantine.jsonl"


class CacheError(FileNotFoundError):
    """A path is not a complete preprocessed cache; the message names it and says what to do."""


@dataclasses.dataclass(frozen=True)
class Cache:
    """A complete cache: where it is, its manifest, and how to reach its files."""

    uri: str
    """Absolute local path or ``s3://bucket/prefix``."""
    manifest: CacheManifest
    storage_options: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def open(cls, uri: str, storage_options: Mapping[str, str] | None = None) -> Cache:
        """The cache at ``uri``; ``CacheError`` when it has no manifest (never written, or half-written)."""
        options = dict(storage_options or {})
        fs, path = filesystem_for(uri, options)
        try:
            text = read_text(fs, f"{path}/{MANIFEST}")
        except FileNotFoundError:
            raise CacheError(
                f"{uri} is not a preprocessed cache (no {MANIFEST}: never written, or its writing did not "
                "finish); make it with `mm-ray preprocess SHARDS --out DIR`"
            ) from None
        try:
            manifest = CacheManifest.from_json(text)
        except (RecordError, ValueError) as err:  # a JSON error is a ValueError too
            raise CacheError(f"{uri}/{MANIFEST}: not a manifest this version reads: {err}") from None
        return cls(cache_uri(uri), manifest, options)

    @staticmethod
    def exists(uri: str, storage_options: Mapping[str, str] | None = None) -> bool:
        """Whether ``uri`` holds a complete cache (its manifest)."""
        fs, path = filesystem_for(uri, dict(storage_options or {}))
        return fs.get_file_info(f"{path}/{MANIFEST}").type == pafs.FileType.File

    @property
    def tokenizer_json(self) -> str:
        """The tokenizer (JSON) the text column was made with."""
        fs, path = self._fs()
        name = self.manifest.tokenizer
        # The manifest is data: its field names a file of this cache, never a path to somewhere else.
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
            raise CacheError(f"{self.uri}/{MANIFEST}: tokenizer {name!r} is not a file name inside the cache")
        return read_text(fs, f"{path}/{name}")

    @property
    def samples(self) -> int:
        """Rows in the cache (samples that passed every check)."""
        return self.manifest.samples_ok

    @property
    def shapes(self) -> dict[str, list[int]]:
        """Per-row shape of every model-ready column: ``image`` [3, S, S], ``input_ids`` [L], ..."""
        return {c: list(v) for c, v in self.manifest.shapes.items()}

    @property
    def preprocessing(self) -> PreprocessingRecord:
        """What the rows were made with (each modality's recorded settings, the label map of string labels)."""
        return self.manifest.preprocess

    @property
    def classes(self) -> list[str] | None:
        """The class names of string labels (``data.labels=names``; label id = position), else None."""
        return list(self.manifest.preprocess.classes) or None

    @property
    def data_uri(self) -> str:
        return f"{self.uri}/{DATA}"

    @property
    def columns(self) -> list[str]:
        """The rows' column names (from the Parquet schema)."""
        fs, path = self._fs()
        return list(pads.dataset(f"{path}/{DATA}", format="parquet", filesystem=fs).schema.names)

    @property
    def num_classes(self) -> int | None:
        """The number of class names (string labels), else one more than the largest label in the cache (None for
        caches written before labels were counted)."""
        return self.manifest.num_classes

    def dataset(
        self,
        *,
        columns: list[str] | None = None,
        in_memory: bool = False,
        shuffle_seed: int | None = None,
        limit: int | None = None,
        block_rows: int = 256,
        first_epoch: int = 0,
        sample_ids: bool = False,
        resume: Any = None,
    ) -> Any:
        """The cached rows as a Ray dataset: streamed from Parquet by Ray Data read tasks (lazy), or, with
        ``in_memory``, read here with pyarrow and put into the object store as blocks of ``block_rows`` rows.

        ``limit``: the first this many rows only. ``columns``: only these (read as such: no Ray Data map step, which would need a CPU of its own).
        ``shuffle_seed``: every execution (every epoch) visits the blocks (in memory) or files (streamed) in
        another order, reproducible from the seed; ``first_epoch``: the first execution takes the order of that
        epoch (a resumed run, ``mm_ray.data.epochs``). In memory costs no Ray Data job or task: on a small machine that
        is seconds per run (and per sweep trial) that a read-then-materialize would spend on read tasks.
        ``sample_ids``: each row gets its ``sample_id`` (``mm_ray.data.sample_ids``, from its key and shard);
        ``resume`` (``sample_ids.Resume``): the rows it lists as trained are left out (the rest of an
        interrupted epoch)."""
        import ray.data

        fs, path = self._fs()
        wanted = columns
        if columns is not None and (sample_ids or resume):
            columns = [*columns, *(c for c in (KEY, SHARD) if c not in columns)]
        drop = [c for c in (KEY, SHARD) if wanted is not None and c not in wanted]
        ids = _RowIds(sample_ids, resume, drop)
        if not in_memory:
            shuffle = None
            if shuffle_seed is not None:
                shuffle = ray.data.FileShuffleConfig(seed=shuffle_seed, reseed_after_execution=True)
            ds = ray.data.read_parquet(f"{path}/{DATA}", filesystem=fs, columns=columns, shuffle=shuffle)
            ds = ds.limit(limit) if limit is not None else ds
            if ids.needed:
                ds = ds.map_batches(ids, batch_format="pyarrow", zero_copy_batch=True)
            return starting_at_epoch(ds, first_epoch) if shuffle is not None else ds
        table = pads.dataset(f"{path}/{DATA}", format="parquet", filesystem=fs).to_table(columns=columns)
        if limit is not None:
            table = table.slice(0, limit)
        if ids.needed:
            table = ids(table)
        blocks = [table.slice(start, block_rows) for start in range(0, table.num_rows, block_rows)]
        ds = ray.data.from_arrow(blocks or [table])
        if shuffle_seed is not None:
            ds = shuffled_per_epoch(ds, shuffle_seed, first_epoch)
        return ds

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        return filesystem_for(self.uri, dict(self.storage_options))


@dataclasses.dataclass(frozen=True)
class _RowIds:
    """Adds ``sample_id`` to an Arrow batch and/or leaves out a resumed epoch's trained rows, then drops the
    key/shard strings the caller did not ask for (a map step over a streamed cache; once in memory)."""

    sample_ids: bool
    resume: Any
    drop: list[str]

    @property
    def needed(self) -> bool:
        return self.sample_ids or bool(self.resume)

    def __call__(self, table: Any) -> Any:
        from mm_ray.data.sample_ids import drop_trained, with_sample_ids

        if self.sample_ids:
            table = with_sample_ids(table)
        if self.resume:
            table = drop_trained(table, self.resume.trained)
        return table.drop_columns(self.drop)


def cache_uri(uri: str) -> str:
    """``uri`` as caches are named: ``s3://`` URLs as given (no trailing slash), local paths absolute."""
    if uri.startswith(S3_PREFIX):
        return uri.rstrip("/")
    return filesystem_for(uri)[1]


def read_text(fs: pafs.FileSystem, path: str) -> str:
    """A whole (small) file as text; ``FileNotFoundError`` when it is not there."""
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(path)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(fs: pafs.FileSystem, path: str, text: str) -> None:
    """Write ``path`` whole or not at all: a local file is written beside it and renamed over it (a crash or an
    error mid-write leaves the old file); an object store's PUT is all-or-nothing already."""
    data = text.encode()
    target = path
    if isinstance(fs, pafs.LocalFileSystem):
        path = f"{path}.tmp-{os.getpid()}"
    with fs.open_output_stream(path) as f:
        f.write(data)
    if path != target:
        fs.move(path, target)


def label_counts(uri: str, storage_options: Mapping[str, str] | None = None) -> dict[str, int]:
    """Samples per label in the cache's rows at ``uri`` (read with pyarrow: the label column only)."""
    values = label_values(uri, storage_options)
    if values.ndim == 2:  # multi-hot tags: samples per tag
        return {str(k): int(n) for k, n in enumerate(np.nansum(values, axis=0)) if n}
    labels, counts = np.unique(values, return_counts=True)
    return {str(int(label)): int(n) for label, n in zip(labels, counts, strict=True)}


def label_values(uri: str, storage_options: Mapping[str, str] | None = None) -> np.ndarray:
    """The cache's label column at ``uri``: int64 ``[N]`` class ids, or float32 ``[N, width]`` (multi-hot tags,
    regression targets). Read with pyarrow, the label column only."""
    fs, path = filesystem_for(uri, dict(storage_options or {}))
    table = pads.dataset(f"{path}/{DATA}", format="parquet", filesystem=fs).to_table(columns=["label"])
    column = table.column("label").combine_chunks()
    if isinstance(column.type, pa.ExtensionType):  # Ray's tensor type, when registered in this process
        column = column.storage
    if (
        pa.types.is_list(column.type)
        or pa.types.is_large_list(column.type)
        or pa.types.is_fixed_size_list(column.type)
    ):
        # One fixed-length float32 row per sample (multi-hot tags, regression targets).
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return column.to_numpy()


def row_bytes(shapes: Mapping[str, Sequence[int]], registry: Registry = BUILTIN) -> int:
    """In-memory bytes of one model-ready row, from a cache manifest's shapes: each modality's columns (their
    dtypes from ``registry``) with its presence flag, and the int64 label."""
    shapes = manifest_shapes(shapes)
    return 8 + sum(s.row_bytes(shapes) for s in registry if all(c in shapes for c in s.column_names))

"""The two non-Ray baselines of ``mm-ray bench ingest``, using exactly the pipeline's decode code.

- ``decode_floor``: as many plain processes as cores, each parsing and decoding whole shards and
  returning nothing but a count. Nothing moves between processes: the machine's limit for this work.
- ``dataloader``: ``webdataset.WebDataset`` (its own tar reader) + ``torch.utils.data.DataLoader``
  with one worker per core; batches are decoded in the workers and handed to the main process.

Both call ``BatchDecoder``: reader rows -> every modality's preprocessor in the pipeline's stage order, the
same classes the Ray actor pools run.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import numpy as np

from mm_ray import columns as C
from mm_ray.data.datasource import raw_schema
from mm_ray.data.members import MemberMap, assemble
from mm_ray.data.raw import RawSample
from mm_ray.data.stages import drop_rejected
from mm_ray.data.tar_stream import iter_shard
from mm_ray.modalities.spec import ModalitySpec, presence_column

Decoders = tuple[tuple[ModalitySpec, dict[str, Any]], ...]
"""``(spec, preprocessor kwargs)`` per modality in stage order (``mm_ray.data.pipeline.decoders_of``)."""


class BatchDecoder:
    """Every modality's preprocessor in one process, applied in the pipeline's stage order."""

    def __init__(self, decoders: Decoders):
        self.modalities = tuple(spec.name for spec, _ in decoders)
        self.stages = [spec.preprocessor(**kwargs) for spec, kwargs in decoders]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        batch = rows_to_batch(rows, self.modalities)
        for stage in self.stages:
            batch, _ = drop_rejected(stage(batch))
        return batch


def rows_to_batch(rows: list[dict[str, Any]], modalities: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Reader rows -> a numpy batch shaped like a Ray Data ``batch_format="numpy"`` batch."""
    batch = {}
    for name in raw_schema(modalities).names:
        col = np.empty(len(rows), dtype=object)
        col[:] = [row[name] for row in rows]
        batch[name] = col
    labels = [row[C.LABEL] for row in rows]
    # A class id per row, or a float32 vector (multilabel tags, regression targets).
    batch[C.LABEL] = (
        np.stack(labels).astype(np.float32) if np.ndim(labels[0]) else np.asarray(labels, np.int64)
    )
    for modality in modalities:
        batch[presence_column(modality)] = batch[presence_column(modality)].astype(bool)
    return batch


def decode_shard(url: str, decoders: Decoders, members: MemberMap, batch_size: int) -> int:
    """Parse and decode one whole shard; return how many samples came out good."""
    decoder = BatchDecoder(decoders)
    done, rows = 0, []
    for item in iter_shard(url):
        if isinstance(item, RawSample):
            row, _ = assemble(item, members)
            if row is not None:
                rows.append(row)
        if len(rows) == batch_size:
            done += len(decoder(rows)[C.LABEL])
            rows = []
    if rows:
        done += len(decoder(rows)[C.LABEL])
    return done


def _decode_shard_star(args: tuple) -> int:
    return decode_shard(*args)


def decode_floor(
    urls: list[str], decoders: Decoders, members: MemberMap, batch_size: int, processes: int
) -> int:
    """(a) whole shards decoded in ``processes`` plain processes; returns the sample count."""
    # fork, like the DataLoader's workers: the floor measures decoding, not interpreter start-up.
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        return sum(
            pool.imap_unordered(_decode_shard_star, [(u, decoders, members, batch_size) for u in urls])
        )


def dataloader_batches(
    urls: list[str], decoders: Decoders, members: MemberMap, batch_size: int, workers: int
) -> Iterator[dict[str, Any]]:
    """(b) webdataset + DataLoader: yields decoded batches (torch tensors) in the main process."""
    import torch
    import webdataset as wds

    decoder = BatchDecoder(decoders)

    def to_row(sample: dict[str, Any]) -> dict[str, Any] | None:
        exts = {k: v for k, v in sample.items() if not k.startswith("__")}
        row, _ = assemble(RawSample(sample["__url__"], sample["__key__"], exts), members)
        return row

    dataset = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False, workersplitter=wds.split_by_worker)
        .map(to_row)
        .select(lambda row: row is not None)
        .batched(batch_size, collation_fn=decoder, partial=True)
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=4)
    yield from loader

"""Actor-pool stages: a modality's preprocessor plus moving rejected rows to the ledger.

Each stage is a callable class that Ray Data runs in its own actor pool
(``map_batches(ModalityStage, fn_constructor_kwargs={"spec": IMAGE, ...}, batch_format="pyarrow",
compute=ActorPoolStrategy(...))``). The preprocessors (``ModalitySpec.preprocessor``) do the real work and never
raise on one bad sample; they mark it in ``REJECT``.
The stage drops marked rows and sends their quarantine records to the ledger, so every row
leaving a stage is good and carries no reject columns.

Every stage class first caps its actor's intra-op thread pools to the actor's CPUs (``mm_ray.data.threads``).

Why Arrow in, Arrow out: a stage needs one column (its modality's raw bytes) of a batch that
also carries the other modalities' bytes and decoded arrays. Converting the whole batch to
numpy and back costs ~0.4 ms per sample per stage (measured: bytes columns become Python
objects and back), about a tenth of the decode work. So the stage converts only its own
column, and the other columns pass through as the same Arrow buffers.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
from ray.data.extensions import ArrowTensorArray

from mm_ray import columns as C
from mm_ray.data.epochs import EPOCH
from mm_ray.data.ledger import raise_if_over_budget
from mm_ray.data.threads import cap_threads
from mm_ray.modalities.spec import ModalitySpec

Batch = dict[str, np.ndarray]


def drop_rejected(batch: Batch) -> tuple[Batch, list[dict[str, str]]]:
    """Split a preprocessed numpy batch into (good rows without reject columns, quarantine records)."""
    reasons = batch.pop(C.REJECT, None)
    details = batch.pop(C.REJECT_DETAIL, None)
    bad = _bad_rows(reasons)
    if bad.size == 0:
        return batch, []
    records = _records(batch[C.SHARD], batch[C.KEY], reasons, details, bad)
    keep = reasons == ""
    return {name: col[keep] for name, col in batch.items()}, records


def _bad_rows(reasons: np.ndarray | None) -> np.ndarray:
    return np.empty(0, dtype=np.int64) if reasons is None else np.flatnonzero(reasons != "")


def _records(shards, keys, reasons, details, rows) -> list[dict[str, str]]:
    return [
        {
            "shard": str(shards[i]),
            "key": str(keys[i]),
            "reason": str(reasons[i]),
            "detail": str(details[i]) if details is not None else "",
        }
        for i in rows
    ]


def _to_arrow(values: np.ndarray) -> pa.Array:
    """A model-ready numpy column -> Arrow (fixed-shape tensors use Ray's tensor extension type)."""
    if values.ndim > 1:
        return ArrowTensorArray.from_numpy(values)
    return pa.array(values)


class _RejectingStage:
    """Runs ``preprocess`` on one modality's columns of an Arrow batch and reports its rejects."""

    def __init__(self, preprocess: Any, ledger: Any, raw_column: str, presence_column: str):
        self._preprocess = preprocess
        self._ledger = ledger
        self._raw = raw_column
        self._presence = presence_column

    def __call__(self, table: pa.Table) -> pa.Table:
        inputs = {self._raw: table.column(self._raw).to_numpy(zero_copy_only=False)}
        out = self._preprocess(inputs)
        reasons, details = out.pop(C.REJECT), out.pop(C.REJECT_DETAIL)
        table = table.drop_columns([self._raw, self._presence])
        for name, values in out.items():
            table = table.append_column(name, _to_arrow(values))
        bad = _bad_rows(reasons)
        if bad.size:
            self._report(_records(table.column(C.SHARD), table.column(C.KEY), reasons, details, bad))
            table = table.filter(pa.array(reasons == ""))
        return table

    def _report(self, records: list[dict[str, str]]) -> None:
        if self._ledger is None:
            return
        from mm_ray.data.ledger import ledger_get

        # Wait: the driver's final summary must include these once the stream has ended.
        raise_if_over_budget(ledger_get(self._ledger.add.remote(records)))


class ModalityStage:
    """One modality's pool stage: its spec's preprocessor, built in the actor from ``kwargs``
    (``ModalitySpec.preprocessor_kwargs``), on its raw column; rejects go to the ledger."""

    def __init__(self, ledger: Any = None, *, spec: ModalitySpec, kwargs: Mapping[str, Any]):
        cap_threads()
        self._run = _RejectingStage(
            spec.preprocessor(**kwargs), ledger, spec.raw_column, spec.presence_column
        )

    def __call__(self, table: pa.Table) -> pa.Table:
        return self._run(table)


@functools.cache
def stage_class(spec: ModalitySpec) -> type[ModalityStage]:
    """``ModalityStage`` under the modality's own name (``ImageStage``): the name Ray Data shows for its pool in
    progress bars and stats (``MapBatches(ImageStage)``)."""
    name = "".join(part.title() for part in spec.name.split("_")) + "Stage"
    return type(
        name, (ModalityStage,), {"__doc__": f"The {spec.name} pool's stage ({ModalityStage.__name__})."}
    )


class FusedStage:
    """Several modalities' stages in one actor (``pools.layout`` fused): each preprocessor in turn on the same
    Arrow batch, rejected rows leaving after each; ``stages`` holds ``(spec, preprocessor kwargs)`` in stage
    order."""

    def __init__(self, ledger: Any = None, *, stages: tuple[tuple[ModalitySpec, Mapping[str, Any]], ...]):
        cap_threads()
        self._runs = [ModalityStage(ledger, spec=spec, kwargs=kwargs) for spec, kwargs in stages]

    def __call__(self, table: pa.Table) -> pa.Table:
        for run in self._runs:
            table = run(table)
        return table


class ShardStage:
    """Reads whole shards and preprocesses them in the same actor (``pools.layout`` fused): what a DataLoader
    worker does, as a Ray Data actor pool. Each input row names one shard (``SHARD_URL``); the stage streams
    it (``mm_ray.data.datasource.read_shard_blocks``: bad samples and shard problems go to the ledger, as in a
    read task) and yields model-ready Arrow blocks of ``rows_per_block`` rows as they are decoded, so the raw
    bytes never travel between processes.
    """

    def __init__(
        self,
        ledger: Any = None,
        *,
        members: Any,
        storage_options: dict[str, str],
        rows_per_block: int,
        stages: tuple[tuple[ModalitySpec, Mapping[str, Any]], ...],
        resume: Any = None,
    ):
        cap_threads()
        self._ledger = ledger
        self._members = members
        self._storage_options = storage_options
        self._rows_per_block = rows_per_block
        self._decode = FusedStage(ledger, stages=stages)
        self._resume = resume

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        from mm_ray.data.datasource import read_shard_blocks
        from mm_ray.data.sample_ids import drop_trained

        resume = (
            self._resume
        )  # a resumed epoch (mm_ray.data.sample_ids.Resume): trained samples never decoded
        urls = batch.column(SHARD_URL).to_pylist()
        # A run read in one execution lists every epoch's shards: each output row says its epoch.
        epochs = batch.column(EPOCH).to_pylist() if EPOCH in batch.column_names else [None] * len(urls)
        for url, epoch in zip(urls, epochs, strict=True):
            if resume and url in resume.shards_done:
                continue
            for raw in read_shard_blocks(
                url, self._members, self._ledger, self._storage_options, self._rows_per_block
            ):
                raw = drop_trained(raw, resume.trained) if resume else raw
                if raw.num_rows:
                    out = self._decode(raw)
                    if epoch is not None:
                        out = out.append_column(EPOCH, pa.array(np.full(out.num_rows, epoch, dtype=np.int32)))
                    yield out


class DroppingColumns:
    """Another stage (``stage``, built from the other keyword arguments) whose output loses the columns in
    ``drop``: how the pipeline's last actors remove what the consumer cannot use (key and shard strings
    before Train workers make tensors) without a map step of its own. ``sample_ids``: first name each row by
    numbers made from those strings (``mm_ray.data.sample_ids``: ``sample_id``, ``shard_id``), so a training
    run can tell which samples it has trained."""

    def __init__(
        self,
        ledger: Any = None,
        *,
        stage: type,
        drop: tuple[str, ...],
        sample_ids: bool = False,
        **kwargs: Any,
    ):
        cap_threads()
        self._stage = stage(ledger, **kwargs)
        self._drop = drop
        self._sample_ids = sample_ids

    def __call__(self, table: pa.Table) -> Iterator[pa.Table]:
        from mm_ray.data.sample_ids import with_sample_ids

        out = self._stage(table)
        for block in [out] if isinstance(out, pa.Table) else out:
            if self._sample_ids:
                block = with_sample_ids(block, shard_column=True)
            yield block.drop_columns([c for c in self._drop if c in block.column_names])


SHARD_URL = "shard_url"
"""The input column of ``ShardStage``: one shard URL per row."""

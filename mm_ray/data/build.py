"""Decode shards once into a preprocessed cache (``mm-ray preprocess``, ``mm_ray.build_cache``).

    cache = build_cache(cfg, ["shards/train-*.tar"], "runs/cache")     # -> Cache (mm_ray.data.cache)
    cache.manifest.samples_ok, cache.manifest.quarantine_reasons, cache.manifest.ingest

Steps: with ``data.labels=names`` or ``task.kind=multilabel``, the label (tag) map (``mm_ray.data.labels``; saved as the manifest's
``preprocess.classes``) -> get the tokenizer (``tokenizer_json``, ``text.tokenizer``, or one trained on the shards' captions) ->
stream the shards through the per-modality actor pools -> write the rows as Parquet, the quarantine log and
the manifest (regression: with the mean/std of the written targets, ``TaskRecord``). The manifest is removed before anything else is written and written last, so a run that
fails half-way leaves no manifest beside new rows: ``Cache.open`` refuses such a directory by name. ``out``
may be a local directory or an ``s3://`` prefix (``data.storage_options``).
"""

from __future__ import annotations

import dataclasses
import time

import pyarrow.fs as pafs
import ray

from mm_ray.config.schema import Config
from mm_ray.data.cache import (
    DATA,
    MANIFEST,
    QUARANTINE_LOG,
    Cache,
    cache_uri,
    label_counts,
    label_values,
    write_text,
)
from mm_ray.data.captions import obtain_tokenizer
from mm_ray.data.labels import with_classes
from mm_ray.data.ledger import ErrorBudgetExceeded, quarantine_jsonl
from mm_ray.data.manifest import TOKENIZER, cache_manifest
from mm_ray.data.pipeline import Ingest
from mm_ray.data.sources import filesystem_for
from mm_ray.progress import ProgressFactory, watch
from mm_ray.runtime import init_ray
from mm_ray.tasks import TargetStats


def build_cache(
    cfg: Config,
    shards: str | list[str],
    out: str,
    *,
    tokenizer_json: str | None = None,
    progress: ProgressFactory | None = None,
    expected: int | None = None,
) -> Cache:
    """Write the cache of ``shards`` to ``out`` and return it; starts or joins Ray as ``cfg.ray`` says.

    ``progress`` draws progress (``mm_ray.progress``), over ``expected`` samples when known. What a previous
    cache at ``out`` held is replaced. Raises ``ShardSpecError`` for specs matching nothing
    and ``ErrorBudgetExceeded`` when too many samples are quarantined: as soon as that is certain (every shard
    read), not only after the whole write. The cache is then left without a manifest, so nothing reads it by
    mistake, and with its quarantine log, which explains the failure.
    """
    started = time.perf_counter()
    specs = [shards] if isinstance(shards, str) else list(shards)
    options = dict(cfg.data.storage_options)
    fs, root = filesystem_for(out, options)
    init_ray(cfg.ray)
    cfg = with_classes(cfg, specs)  # string labels: the label map, before any row gets an id
    tokenizer_json = tokenizer_json or obtain_tokenizer(cfg, specs)
    _clear(fs, root)
    write_text(fs, f"{root}/{TOKENIZER}", tokenizer_json)
    stream = Ingest.from_config(cfg, specs, tokenizer_json)
    name = out.rstrip("/").rsplit("/", 1)[-1]
    try:
        with watch(progress, f"preprocess {name}", lambda: stream.summary()["samples_read"], expected):
            try:
                stream.dataset.write_parquet(
                    f"{root}/{DATA}",
                    filesystem=fs,
                    min_rows_per_file=2048,
                    # The resource plan keeps CPUs for read tasks only; a write task asks for a read task's share
                    # rather than Ray's default whole CPU, which the actor pools may leave no room for.
                    ray_remote_args={"num_cpus": stream.plan.read_num_cpus},
                )
            except ErrorBudgetExceeded as err:
                # Raised inside a read task or pool as soon as the budget was certainly exceeded (the ledger
                # decides): the same one-line message as the check after a complete write, not Ray's traceback.
                log = cache_uri(f"{out.rstrip('/')}/{QUARANTINE_LOG}")
                message = ray.get(stream.ledger.budget_exceeded.remote(log_hint=log))
                raise ErrorBudgetExceeded(message or str(err)) from None
        summary = stream.finish()
    finally:  # written whether or not the budget held: it is what explains a failure
        write_text(fs, f"{root}/{QUARANTINE_LOG}", quarantine_jsonl(stream.quarantine_records()))
    seconds = time.perf_counter() - started
    # Labels counted once here, so that training knows its classes without a Ray Data job over the rows.
    regression = cfg.task.kind == "regression"
    counts = label_counts(out, options) if summary["samples_ok"] and not regression else {}
    if regression and summary["samples_ok"]:
        cfg = with_cached_target_stats(cfg, out)
    manifest = cache_manifest(cfg, summary, stream.urls, tokenizer_json, seconds, label_counts=counts)
    write_text(fs, f"{root}/{MANIFEST}", manifest.to_json())
    return Cache(cache_uri(out), manifest, options)


def with_cached_target_stats(cfg: Config, out: str) -> Config:
    """Regression: ``cfg`` with ``task.target_mean``/``target_std`` of the rows just written (the training set
    as the model will see it), unless the config fixed them."""
    if cfg.task.target_mean:
        return cfg
    stats = TargetStats.of(label_values(out, cfg.data.storage_options))
    task = dataclasses.replace(cfg.task, target_mean=list(stats.mean), target_std=list(stats.std))
    return dataclasses.replace(cfg, task=task)


def _clear(fs: pafs.FileSystem, root: str) -> None:
    """Remove the manifest first (the cache is incomplete from here on), then the old rows."""
    fs.create_dir(root, recursive=True)
    if fs.get_file_info(f"{root}/{MANIFEST}").type == pafs.FileType.File:
        fs.delete_file(f"{root}/{MANIFEST}")
    # Ray Data writes new files beside old ones: a re-run would otherwise double the cache.
    if fs.get_file_info(f"{root}/{DATA}").type == pafs.FileType.Directory:
        fs.delete_dir(f"{root}/{DATA}")

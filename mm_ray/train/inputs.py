"""What a training run reads: a preprocessed cache, or the shards themselves through the ingest actor pools.

    inputs = train_inputs(cfg)          # cache if train.cache is set, else data.shards streamed
    inputs.datasets["train"], inputs.shapes, inputs.num_classes, inputs.rows, inputs.source

Both sources give the Train workers the same model-ready columns (``mm_ray.columns``), so the worker loop
does not know which one it reads:

- ``cache``: the rows ``mm-ray preprocess`` wrote (``mm_ray.data.cache.Cache``), decoded once; each epoch
  visits its blocks in another seeded order.
- ``shards``: every epoch re-reads ``data.shards`` through the ingest pipeline (``mm_ray.data.pipeline``)
  while the workers train: nothing is written in between, the shard order changes every epoch (seeded), and
  bad samples go to the ingest's quarantine ledger, whose counts each epoch's metrics carry. With one worker
  all epochs are one Ray Data execution (``train.one_execution``): the pools start once per run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import ray
import ray.data

from mm_ray.columns import KEY, SHARD
from mm_ray.config.load import ConfigError
from mm_ray.config.schema import Config
from mm_ray.data.cache import Cache, label_counts, row_bytes
from mm_ray.data.labels import with_classes, with_target_stats
from mm_ray.data.manifest import PreprocessingRecord, model_ready_shapes, preprocessing_of
from mm_ray.data.pipeline import Ingest
from mm_ray.modalities.registry import BUILTIN, Registry, registry_with
from mm_ray.train.datasets import CacheRecipe, Recipe, TrainDatasets
from mm_ray.train.resume import run_storage

logger = logging.getLogger(__name__)

NOT_MODEL_INPUTS = (KEY, SHARD)
"""String columns that cannot become tensors; dropped before the rows reach the workers."""


@dataclasses.dataclass
class TrainInputs:
    """The datasets a run trains and validates on, and what the model is sized from."""

    source: Literal["cache", "shards"]
    datasets: dict[str, Any]
    """``val`` a dataset; ``train`` and ``train_resume`` functions that build theirs when a worker group
    starts (``mm_ray.train.datasets``)."""
    tokenizer_json: str
    shapes: Mapping[str, list[int]]
    """Model-ready column -> per-row shape (``image`` [3, S, S], ``input_ids`` [L], ...)."""
    num_classes: int
    rows: int
    """Training samples per epoch (known for a cache, estimated for shards): sizes the LR schedule."""
    preprocessing: PreprocessingRecord
    """What the training rows were made with (a cache's record, or the run's own settings for shards)."""
    streams: dict[str, Ingest] = dataclasses.field(default_factory=dict)
    """``shards`` only: the ingest run of each split (its ledger counts what was quarantined)."""
    cropped_at_decode: bool = False
    """The training pools draw ``train.augment``'s random resized crop: the batch augmentation must not crop
    again."""
    one_execution: bool = False
    """``train`` is one Ray Data execution for all its epochs, rows tagged with their epoch
    (``train.one_execution``): the worker cuts it with ``mm_ray.train.epoch_stream.RunEpochs``."""


def train_inputs(cfg: Config) -> TrainInputs:
    """The inputs of run ``cfg``: ``train.cache`` when set, else ``data.shards`` streamed. Raises
    ``ConfigError`` naming the key when neither is set or a cache is missing."""
    if cfg.train.cache:
        return cache_inputs(cfg)
    if cfg.data.shards:
        return shard_inputs(cfg)
    raise ConfigError(
        "train.cache: set it to a cache written by `mm-ray preprocess --out DIR`, "
        "or set data.shards to train straight from the shards"
    )


# --------------------------------------------------------------------------------------------- cache


def cache_inputs(cfg: Config) -> TrainInputs:
    """Datasets over ``train.cache`` (and ``train.val_cache``)."""
    t = cfg.train
    caches = {"train": open_cache(t.cache, "train.cache", cfg)}
    if t.val_cache:
        caches["val"] = open_cache(t.val_cache, "train.val_cache", cfg)
    tokenizer_json = caches["train"].tokenizer_json
    check_same_task(caches["train"], "train.cache", cfg)
    if "val" in caches:
        check_same_tokenizer(caches["val"], tokenizer_json, cfg)
        check_same_task(caches["val"], "train.val_cache", cfg)
        check_same_classes(caches["val"].classes, caches["train"].classes, "train.val_cache", cfg)
    in_memory = fits_in_memory(caches.values(), registry_with(tuple(cfg.modalities.plugins)))
    train = caches["train"]
    # Only the training rows are shuffled (every epoch, from train.seed): validation scores them all anyway.
    recipe = CacheRecipe(
        train,
        columns=model_ready_columns(train),
        in_memory=in_memory,
        shuffle_seed=t.seed if t.shuffle else None,
        limit=t.limit_samples,
    )
    datasets = positioned(recipe.with_rows_in_memory(needs_sample_ids(cfg)), cfg)
    if "val" in caches:
        val = caches["val"]
        # Small blocks: distributed validation balances the workers' parts by blocks.
        rows = val_block_rows(val.samples, t.num_workers)
        datasets["val"] = val.dataset(columns=model_ready_columns(val), in_memory=in_memory, block_rows=rows)
    return TrainInputs(
        source="cache",
        datasets=datasets,
        tokenizer_json=tokenizer_json,
        shapes=train.shapes,
        num_classes=task_outputs(cfg) or class_count(cfg, train.classes) or _num_classes(caches.values()),
        rows=min(train.samples, t.limit_samples or train.samples),
        preprocessing=train.preprocessing,
    )


VAL_BLOCKS_PER_WORKER = 16
"""Validation blocks per worker (at least): the workers pull blocks as they finish the last one, so the
slowest ends at most one block after the others (measured with `mm-ray bench train --modes val1,val2`)."""


def val_block_rows(samples: int, workers: int) -> int:
    """Rows per in-memory validation block: small enough for ``VAL_BLOCKS_PER_WORKER`` blocks per worker
    (distributed validation balances by blocks), 32 to 256 rows."""
    return max(32, min(256, math.ceil(samples / (VAL_BLOCKS_PER_WORKER * max(1, workers)))))


def needs_sample_ids(cfg: Config) -> bool:
    """Whether the training rows must carry their ``sample_id``: step checkpoints record which samples an
    epoch has trained, and the sample log writes them. Off, the data path is as it always was."""
    return cfg.train.checkpoint_every_steps > 0 or bool(cfg.train.sample_log)


def positioned(recipe: Recipe, cfg: Config, *, limit: int | None = None) -> dict[str, Any]:
    """``train`` and ``train_resume`` as functions of the run's latest data position (``TrainDatasets``)."""
    storage = run_storage(cfg) if cfg.train.num_workers else None  # local mode keeps no checkpoints
    return TrainDatasets(recipe, storage, sample_ids=needs_sample_ids(cfg), limit=limit).for_trainer()


def open_cache(uri: str, key: str, cfg: Config) -> Cache:
    try:
        return Cache.open(uri, cfg.data.storage_options)
    except FileNotFoundError as err:
        raise ConfigError(f"{key}: {err}") from None


def check_same_tokenizer(val: Cache, tokenizer_json: str, cfg: Config) -> None:
    if val.tokenizer_json != tokenizer_json:
        train = cfg.train.cache or "the training shards"
        raise ConfigError(
            f"train.val_cache: {cfg.train.val_cache} was tokenized with a different tokenizer than {train}; "
            "preprocess it with `text.tokenizer=<the training run's tokenizer.json>`"
        )


def check_same_classes(val: list[str] | None, train: list[str] | None, key: str, cfg: Config) -> None:
    """A validation set must give its labels the training set's ids (same class names, same order)."""
    if val != train:
        what = f"class names {_show_classes(val)}" if val else "integer labels"
        raise ConfigError(
            f"{key}: its rows were labelled with {what}, the training data with "
            f"{_show_classes(train) if train else 'integer labels'}; preprocess it with "
            f"`data.classes_from={cfg.train.cache or '<the training cache>'}` so both use one label map"
        )


def check_same_task(cache: Cache, key: str, cfg: Config) -> None:
    """A cache's labels must have been read for the run's task (class ids, tags, targets)."""
    record = cache.preprocessing.task
    kind = record.kind if record is not None else "classification"
    targets = list(record.targets) if record is not None else []
    if kind != cfg.task.kind or (kind == "regression" and targets != list(cfg.task.targets)):
        what = f"{kind} labels" + (f" (targets {targets})" if kind == "regression" and targets else "")
        raise ConfigError(
            f"task.kind: the rows of {key} ({cache.uri}) hold {what}, the run asks for task.kind={cfg.task.kind}"
            + (f" with task.targets={list(cfg.task.targets)}" if cfg.task.kind == "regression" else "")
            + "; preprocess the shards again with the run's task settings"
        )


def task_outputs(cfg: Config) -> int | None:
    """Regression: the model's outputs (one per target); None for the tasks sized by their classes or tags."""
    return max(1, len(cfg.task.targets)) if cfg.task.kind == "regression" else None


def _show_classes(classes: list[str]) -> str:
    return str(classes) if len(classes) <= 8 else f"{classes[:8]}... ({len(classes)})"


def class_count(cfg: Config, classes: list[str] | None) -> int | None:
    """``model.num_classes``, or the number of class names; ``ConfigError`` when both are set and disagree."""
    if classes and cfg.model.num_classes and cfg.model.num_classes != len(classes):
        raise ConfigError(
            f"model.num_classes: {cfg.model.num_classes}, but the label map has {len(classes)} class names; "
            "leave it unset with data.labels=names"
        )
    return len(classes) if classes else cfg.model.num_classes


def model_ready_columns(cache: Cache) -> list[str]:
    """Every column but the key/shard strings: they cannot become tensors, and dropping them at the read
    moves less data to the workers."""
    return [c for c in cache.columns if c not in NOT_MODEL_INPUTS]


IN_MEMORY_FRACTION = 0.25
"""Caches whose rows fit in this fraction of the cluster's object store are read once, before training."""


def fits_in_memory(caches: Iterable[Cache], registry: Registry = BUILTIN) -> bool:
    """Whether the caches' rows all fit in ``IN_MEMORY_FRACTION`` of the object store.

    Streamed from Parquet, every epoch re-reads and re-decodes the cache in Ray Data tasks that compete with
    the workers for the CPUs (and wait forever when the workers hold all of them); kept in memory, an epoch
    only hands existing blocks to the workers (measured with `mm-ray bench train`). A cache larger than the
    budget still streams.
    """
    needed = sum(cache.samples * row_bytes(cache.shapes, registry) for cache in caches)
    return needed <= IN_MEMORY_FRACTION * ray.cluster_resources().get("object_store_memory", 0.0)


def _num_classes(caches: Iterable[Cache]) -> int:
    """From the caches' label counts; caches written before labels were counted need a scan of the labels."""
    caches = list(caches)
    known = [cache.num_classes for cache in caches]
    if all(n is not None for n in known):
        return max(known)  # type: ignore[type-var]
    return 1 + max(int(label) for cache in caches for label in label_counts(cache.uri, cache.storage_options))


# -------------------------------------------------------------------------------------------- shards


def shard_inputs(cfg: Config) -> TrainInputs:
    """Datasets that decode ``data.shards`` (and ``data.val_shards``, or ``train.val_cache``) every epoch.

    The ingest pools share the cluster with the Train workers: the resource plan reserves the workers' CPUs
    first (``train.num_workers`` x ``train.cpus_per_worker``, on the nodes ``train.worker_resources`` allows),
    so pools, shard reads and training never wait on one another. ``model.num_classes`` is required: no
    manifest has counted the labels.
    """
    from mm_ray.data.captions import obtain_tokenizer

    t = cfg.train
    cfg = with_classes(cfg, list(cfg.data.shards))  # string labels, tags: the map from the training shards
    cfg = with_target_stats(cfg, list(cfg.data.shards))  # regression: the training targets' mean/std
    named = cfg.data.labels == "names" or cfg.task.kind == "multilabel"
    if not (task_outputs(cfg) or class_count(cfg, cfg.data.classes if named else None)):
        raise ConfigError(
            "model.num_classes: required when training from data.shards (no cache manifest has counted the "
            "labels); set it to the number of classes"
        )
    tokenizer_json = obtain_tokenizer(cfg, list(cfg.data.shards))
    # The Train workers' CPUs are kept free where the workers can run (train.worker_resources); local mode
    # trains in this driver, whose node the plan cannot tell: its CPU is kept free everywhere.
    placement = {"train_cpus": t.num_workers * t.cpus_per_worker, "train_resources": t.worker_resources}
    reserved = 0.0 if t.num_workers else 1.0
    # Only the training stream is augmented; validation scores the data as it is.
    at_decode = t.augment.enabled and t.augment.at_decode
    context = ray.get_runtime_context()
    if context.get_actor_id() is not None:
        # Inside an actor (a Tune trial's function): the CPUs it holds are not free for pools either.
        reserved += context.get_assigned_resources().get("CPU", 0.0)
    # One worker reads one execution for the whole run: its pools start once (train.one_execution).
    one_execution = t.one_execution and t.num_workers == 1 and not t.limit_samples
    train = Ingest.from_config(
        cfg,
        list(cfg.data.shards),
        tokenizer_json,
        reserved_cpus=reserved,
        **placement,
        shuffle_seed=t.seed if t.shuffle else None,
        drop_columns=NOT_MODEL_INPUTS,
        augment=at_decode,
        run_epochs=t.epochs if one_execution else None,
    )
    streams = {"train": train}
    # Built at each worker-group start: a resumed run reads epoch k's shards in the order an uninterrupted
    # run would, and the rest of an interrupted epoch without its trained samples.
    datasets = positioned(train.recipe, cfg, limit=t.limit_samples)
    classes = list(cfg.data.classes) if named else None
    if t.val_cache:
        val_cache = open_cache(t.val_cache, "train.val_cache", cfg)
        check_same_tokenizer(val_cache, tokenizer_json, cfg)
        check_same_task(val_cache, "train.val_cache", cfg)
        check_same_classes(val_cache.classes, classes, "train.val_cache", cfg)
        datasets["val"] = val_cache.dataset(columns=model_ready_columns(val_cache))
    elif cfg.data.val_shards:
        val = Ingest.from_config(
            cfg,
            list(cfg.data.val_shards),
            tokenizer_json,
            reserved_cpus=reserved,
            **placement,
            drop_columns=NOT_MODEL_INPUTS,
        )
        streams["val"] = val
        datasets["val"] = val.dataset
    rows = t.samples_per_epoch or estimate_rows(train.urls, cfg)
    if t.limit_samples:
        rows = min(rows, t.limit_samples)
    logger.info(
        "training from %d shards (%s), about %d samples per epoch",
        len(train.urls),
        train.plan.describe(),
        rows,
    )
    return TrainInputs(
        source="shards",
        datasets=datasets,
        tokenizer_json=tokenizer_json,
        shapes=model_ready_shapes(cfg),
        num_classes=task_outputs(cfg) or class_count(cfg, classes),
        rows=rows,
        preprocessing=preprocessing_of(cfg),
        streams=streams,
        cropped_at_decode=at_decode,
        one_execution=train.recipe is not None and train.recipe.run_epochs is not None,
    )


def estimate_rows(urls: list[str], cfg: Config) -> int:
    """Samples per epoch for the LR schedule: the first shard's sample count times the number of shards.

    Counting reads one shard's tar headers and bytes on the driver (no decoding). Set
    ``train.samples_per_epoch`` where shards differ a lot in size.
    """
    from mm_ray.data.raw import RawSample
    from mm_ray.data.tar_stream import iter_shard

    first = sum(
        isinstance(item, RawSample) for item in iter_shard(urls[0], storage_options=cfg.data.storage_options)
    )
    return max(1, first * len(urls))

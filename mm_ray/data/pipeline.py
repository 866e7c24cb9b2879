"""Assemble the Ray Data ingest pipeline: shards -> read tasks -> the modalities' actor pools.

This is the one module that wires Ray Data together; the pieces it wires are plain Python
(reader, preprocessors) and the resource policy lives in ``mm_ray.data.resources``.

Usage::

    stream = ingest(cfg, shard_specs)                     # (mm_ray.ingest) starts/joins Ray as cfg.ray says
    for batch in stream.dataset.iter_batches(batch_size=64):   # model-ready numpy batches
        ...
    summary = stream.finish()        # counts, quarantine reasons; enforces the error budget

At this point in the stream each row has: ``__key__``, ``__shard__``, ``label``, and per modality of the run
(``mm_ray.modalities``) its presence flag ``has_<m>`` and its model-ready columns (``image`` uint8 [3,S,S],
``input_ids``/``attention_mask`` [L], ``audio`` float32 [n_mels, frames], ...). Rejected rows never leave their
stage; they are in the ledger.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
import ray.data

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import Config
from mm_ray.data.cache import row_bytes
from mm_ray.data.datasource import ShardDatasource
from mm_ray.data.epochs import EPOCH, epoch_order, shuffled_per_epoch
from mm_ray.data.ledger import QuarantineLedger, check_error_budget, ledger_get, write_quarantine_log
from mm_ray.data.manifest import model_ready_shapes
from mm_ray.data.members import MemberMap, member_map
from mm_ray.data.resources import IngestPlan, plan_ingest
from mm_ray.data.sources import expand_shards
from mm_ray.data.stages import SHARD_URL, DroppingColumns, FusedStage, ShardStage, stage_class
from mm_ray.modalities.registry import Registry, extensions_of, modalities_of, pool_key, pool_of, settings_of
from mm_ray.modalities.spec import ModalitySpec, PreprocessContext
from mm_ray.runtime import cluster_nodes

FUSED_POOL = "fused"
"""The name of the pool whose actors run several modalities' preprocessors (``pools.fused``)."""

Decoders = Mapping[str, tuple[ModalitySpec, dict[str, Any]]]
"""Modality name -> (its spec, its preprocessor's keyword arguments), in stage order."""


def stage_order(cfg: Config, registry: Registry) -> tuple[ModalitySpec, ...]:
    """The run's modalities in the order the pipeline decodes them: the smallest model-ready row first.

    Rows rejected by an early, cheap stage (a tokenizer) never reach the costly decoders, and every stage carries
    the columns the stages before it made: the largest output (an image: 150 KB a sample at 224 px) comes last so
    no other stage has to move it. Ties keep the canonical order."""
    size = {s.name: s.row_bytes(s.shapes(settings_of(cfg, s))) for s in registry}
    return tuple(sorted(registry, key=lambda s: size[s.name]))


def pool_groups(cfg: Config, registry: Registry | None = None) -> dict[str, tuple[str, ...]]:
    """The actor pools of ``pools.layout``, in stage order: pool name (a modality, or ``fused``) -> the
    modalities its actors preprocess."""
    order = stage_order(cfg, registry if registry is not None else modalities_of(cfg))
    layout = cfg.pools.layout
    if layout == "per_modality":
        return {s.name: (s.name,) for s in order}
    gpu = [s for s in order if pool_of(cfg, s).num_gpus > 0]
    if layout == FUSED_POOL and gpu:
        raise ConfigError(
            f"pools.layout: fused puts every modality in one CPU pool, but {pool_key(gpu[0])}.num_gpus asks for "
            "GPUs; use layout auto (a GPU stage gets a pool of its own) or per_modality"
        )
    # A stage pinned by resources of its own (pools.<m>.resources) runs where they are: a pool of its own too.
    own = [s.name for s in order if s in gpu or (layout == "auto" and pool_of(cfg, s).resources)]
    cpu = tuple(s.name for s in order if s.name not in own)
    groups: dict[str, tuple[str, ...]] = {FUSED_POOL: cpu} if len(cpu) > 1 else {m: (m,) for m in cpu}
    groups.update({m: (m,) for m in own})
    return groups


def preprocessor_kwargs(
    cfg: Config, tokenizer_json: str, augment: bool = False, registry: Registry | None = None
) -> dict[str, dict[str, Any]]:
    """Flat keyword arguments of each modality's preprocessor (``ModalitySpec.preprocessor_kwargs``); ``augment``
    adds the decode-time augmentation of ``train.augment`` (a random resized crop per image, a random window per
    longer clip)."""
    reg = registry if registry is not None else modalities_of(cfg)
    drawn = cfg.train.augment if augment else None
    return {
        s.name: s.preprocessor_kwargs(
            settings_of(cfg, s), PreprocessContext(extensions_of(cfg, s), drawn, tokenizer_json)
        )
        for s in reg
    }


def decoders_of(
    cfg: Config, tokenizer_json: str, augment: bool = False
) -> tuple[tuple[ModalitySpec, dict], ...]:
    """``(spec, preprocessor kwargs)`` of every modality of ``cfg``, in stage order: what one process runs to
    decode a batch the way the pools do (the benchmarks' non-Ray baselines)."""
    reg = modalities_of(cfg)
    kwargs = preprocessor_kwargs(cfg, tokenizer_json, augment=augment, registry=reg)
    return tuple((spec, kwargs[spec.name]) for spec in stage_order(cfg, reg))


def build_dataset(
    urls: list[str],
    *,
    members: MemberMap,
    decoders: Decoders,
    plan: IngestPlan,
    ledger: Any,
    storage_options: dict[str, str],
    rows_per_block: int,
    shuffle_seed: int | None = None,
    first_epoch: int = 0,
    drop_columns: Sequence[str] = (),
    sample_ids: bool = False,
    resume: Any = None,
    epochs: Sequence[int] | None = None,
) -> ray.data.Dataset:
    """The lazy Ray dataset of model-ready rows (nothing runs until it is consumed).

    ``shuffle_seed``: every execution (every training epoch) reads the shards in another order, reproducible
    from the seed (shards read in the first pool only); the first execution takes the order of epoch
    ``first_epoch`` (a resumed run). ``drop_columns`` leave in the last pool's actors, after ``sample_ids``
    (numeric ``sample_id``/``shard_id`` columns) were made from them. ``resume`` (``sample_ids.Resume``): the
    rest of an interrupted epoch: its finished shards are not read, its trained samples not decoded.

    ``epochs``: one execution reads all these epochs (``train.one_execution``; the first pool must read the
    shards): the input lists each epoch's shards in its order (``epoch_order``: ``shuffle_seed`` and the
    epoch), and every row carries its epoch in ``EPOCH``. Read it in order (``preserve_order``).
    """
    if epochs is not None:
        if not plan.reads_in_pool:
            raise ValueError(
                "one execution for several epochs needs the pool that reads the shards (layout fused)"
            )
        items = [{SHARD_URL: url, EPOCH: e} for e in epochs for url in epoch_order(urls, shuffle_seed, e)]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    elif plan.reads_in_pool:
        # The first pool reads its shards itself: the input is only the list of shard URLs, one per block.
        ds = ray.data.from_items([{SHARD_URL: url} for url in urls], override_num_blocks=max(1, len(urls)))
        if shuffle_seed is not None:
            # Shuffling URL blocks is cheap (the all-to-all step holds only the URLs) and, with reseeding,
            # gives each execution its own order.
            ds = shuffled_per_epoch(ds, shuffle_seed, first_epoch)
    else:
        source = ShardDatasource(
            urls,
            members=members,
            ledger=ledger,
            storage_options=storage_options,
            rows_per_block=rows_per_block,
            resume=resume,
        )
        ds = ray.data.read_datasource(source, override_num_blocks=len(urls), num_cpus=plan.read_num_cpus)
    for i, (name, modalities) in enumerate(plan.groups.items()):
        pool = plan.pools[name]
        batch_size = pool.batch_size
        if i == 0 and plan.reads_in_pool:
            stage, batch_size = ShardStage, 1
            stage_kwargs = {
                "members": members,
                "storage_options": storage_options,
                "rows_per_block": rows_per_block,
                "stages": tuple(decoders[m] for m in modalities),
                **({"resume": resume} if resume else {}),
            }
        elif len(modalities) == 1:
            spec, kwargs = decoders[modalities[0]]
            stage, stage_kwargs = stage_class(spec), {"spec": spec, "kwargs": kwargs}
        else:
            stage, stage_kwargs = FusedStage, {"stages": tuple(decoders[m] for m in modalities)}
        if (drop_columns or sample_ids) and i == len(plan.groups) - 1:
            # In the last stage's actors: a map step of its own would need a CPU slot (and a copy).
            stage_kwargs = {
                "stage": stage,
                "drop": tuple(drop_columns),
                "sample_ids": sample_ids,
                **stage_kwargs,
            }
            stage = DroppingColumns
        ds = ds.map_batches(
            stage,
            fn_constructor_kwargs={"ledger": ledger, **stage_kwargs},
            compute=ray.data.ActorPoolStrategy(
                min_size=pool.min_size,
                max_size=pool.max_size,
                max_tasks_in_flight_per_actor=pool.max_tasks_in_flight,
            ),
            num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus,
            # Custom resources pin the pool to the nodes that declare them (mm_ray.placement).
            resources=pool.resources or None,
            batch_size=batch_size,
            batch_format="pyarrow",
            zero_copy_batch=True,
        )
    return ds


MIN_BLOCK_BYTES = 1 << 20
"""Blocks are never cut below 1 MiB: smaller ones cost more per-block overhead than they save in latency."""


def _pool_config(cfg: Config, registry: Registry, name: str) -> Any:
    return cfg.pools.fused if name == FUSED_POOL else pool_of(cfg, registry[name])


@contextlib.contextmanager
def blocks_of(rows: int, shapes: Mapping[str, Sequence[int]], registry: Registry) -> Iterator[None]:
    """Datasets created inside get blocks of about ``rows`` model-ready rows of ``shapes``.

    Ray Data coalesces what a map stage yields until ``DataContext.target_max_block_size`` bytes: at the
    driver-wide 16 MiB, a decoding actor that yields every 64 rows still hands a whole small-image shard over as
    one block at its end, and the consumer's first batch waits for it. Sized from the decoded row, a block
    is ready after ``data.read_block_rows`` rows. The dataset keeps the context it was created with.
    """
    ctx = ray.data.DataContext.get_current()
    before = ctx.target_max_block_size
    ctx.target_max_block_size = max(MIN_BLOCK_BYTES, rows * row_bytes(shapes, registry))
    try:
        yield
    finally:
        ctx.target_max_block_size = before


def limit_memory(memory_limit_mb: int | None) -> None:
    """Cap the object-store bytes Ray Data keeps in flight, so memory stays flat as data grows.

    Applies to datasets created afterwards in this driver (a dataset copies the context).
    """
    if memory_limit_mb:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
            object_store_memory=memory_limit_mb * 1024 * 1024
        )


def plan_of(
    cfg: Config,
    registry: Registry,
    reserved_cpus: float = 0.0,
    *,
    train_cpus: float = 0.0,
    train_resources: Mapping[str, float] | None = None,
) -> IngestPlan:
    """The resource plan of ``cfg``'s pools on the running cluster (``mm_ray.data.resources.plan_ingest``):
    CPUs ``reserved_cpus`` kept free everywhere, ``train_cpus`` where ``train_resources`` let Train workers run."""
    groups = pool_groups(cfg, registry)
    pools = {name: _pool_config(cfg, registry, name) for name in groups}
    keys = {name: "pools.fused" if name == FUSED_POOL else pool_key(registry[name]) for name in groups}
    shares = {name: sum(registry[m].cost_share for m in modalities) for name, modalities in groups.items()}
    reads_in_pool = FUSED_POOL in groups and cfg.pools.layout != "per_modality"
    return plan_ingest(
        pools,
        nodes=cluster_nodes(),
        read_num_cpus=cfg.pools.read_num_cpus,
        # The fused pool reads its shards itself: no read tasks to keep CPUs for.
        read_slots=0 if reads_in_pool else 2,
        reserved_cpus=reserved_cpus,
        train_cpus=train_cpus,
        train_resources=train_resources,
        shares={name: share / sum(shares.values()) for name, share in shares.items()},
        groups=groups,
        reads_in_pool=reads_in_pool,
        keys=keys,
    )


@dataclasses.dataclass(frozen=True)
class StreamRecipe:
    """Everything ``build_dataset`` needs, so the same stream can be built again later and elsewhere: a
    training run's datasets are rebuilt at each worker-group start from the run's latest data position
    (``mm_ray.train.datasets``), in the Train controller. Picklable (the ledger is an actor handle)."""

    urls: list[str]
    members: MemberMap
    decoders: Decoders
    plan: IngestPlan
    ledger: Any
    storage_options: dict[str, str]
    rows_per_block: int
    shapes: dict[str, Any]
    registry: Registry
    memory_limit_mb: int | None
    shuffle_seed: int | None = None
    drop_columns: tuple[str, ...] = ()
    run_epochs: int | None = None
    """Set: one execution reads every epoch from ``first_epoch`` to this one (excluded), rows tagged with
    their ``EPOCH``; a resumed epoch (``resume``) is read alone, in the same order. None: one per epoch."""

    def build(
        self, first_epoch: int = 0, *, sample_ids: bool = False, resume: Any = None
    ) -> ray.data.Dataset:
        """The lazy dataset (see ``build_dataset``), made under this recipe's memory limit and block size."""
        epochs = None
        if self.run_epochs is not None:
            epochs = [first_epoch] if resume is not None else list(range(first_epoch, self.run_epochs))
        limit_memory(self.memory_limit_mb)
        with blocks_of(self.rows_per_block, self.shapes, self.registry):
            return build_dataset(
                self.urls,
                members=self.members,
                decoders=self.decoders,
                plan=self.plan,
                ledger=self.ledger,
                storage_options=self.storage_options,
                rows_per_block=self.rows_per_block,
                shuffle_seed=self.shuffle_seed,
                first_epoch=first_epoch,
                drop_columns=self.drop_columns,
                sample_ids=sample_ids,
                resume=resume,
                epochs=epochs,
            )


@dataclasses.dataclass
class Ingest:
    """A configured ingest run: the dataset plus the ledger that counts what was set aside."""

    dataset: ray.data.Dataset
    ledger: Any
    urls: list[str]
    plan: IngestPlan
    error_budget: float
    fail_on_unreadable_shard: bool
    recipe: StreamRecipe | None = None
    """How to build ``dataset`` again (another first epoch, sample ids, the rest of an interrupted epoch)."""

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        shard_specs: list[str],
        tokenizer_json: str,
        reserved_cpus: float = 0.0,
        *,
        train_cpus: float = 0.0,
        train_resources: Mapping[str, float] | None = None,
        repeat: int = 1,
        shuffle_seed: int | None = None,
        first_epoch: int = 0,
        drop_columns: Sequence[str] = (),
        augment: bool = False,
        run_epochs: int | None = None,
    ) -> Ingest:
        """Plan and build the pipeline.

        ``reserved_cpus``: CPUs the pools must leave free on every node set; ``train_cpus``: the Train workers'
        CPUs, kept free only on the nodes their custom resources ``train_resources`` allow. ``repeat`` reads
        the shard list that many times (benchmarks; the ledger counts each shard once). ``shuffle_seed``,
        ``first_epoch`` and ``drop_columns``: as in ``build_dataset`` (training streams). ``augment``: the pools draw
        ``train.augment``'s crop and a random audio window while decoding (training streams). ``run_epochs``:
        one execution reads the epochs from ``first_epoch`` up to this one (``StreamRecipe.run_epochs``), when
        the layout lets the first pool read the shards (else one execution per epoch, as without it).
        """
        urls = expand_shards(shard_specs, storage_options=cfg.data.storage_options) * repeat
        reg = modalities_of(cfg)
        groups = pool_groups(cfg, reg)
        plan = plan_of(cfg, reg, reserved_cpus, train_cpus=train_cpus, train_resources=train_resources)
        # Never restarted: a fresh ledger would have lost the counts so far (see mm_ray.data.ledger).
        ledger = ray.remote(num_cpus=0, max_restarts=0)(QuarantineLedger).remote(
            error_budget=cfg.data.error_budget, shards_total=len(set(urls))
        )
        kwargs = preprocessor_kwargs(cfg, tokenizer_json, augment=augment, registry=reg)
        recipe = StreamRecipe(
            urls,
            members=member_map(cfg, reg),
            decoders={m: (reg[m], kwargs[m]) for names in groups.values() for m in names},
            plan=plan,
            ledger=ledger,
            storage_options=dict(cfg.data.storage_options),
            rows_per_block=cfg.data.read_block_rows,
            shapes=dict(model_ready_shapes(cfg, reg)),
            registry=reg,
            memory_limit_mb=cfg.data.memory_limit_mb,
            shuffle_seed=shuffle_seed,
            drop_columns=tuple(drop_columns),
            run_epochs=run_epochs if plan.reads_in_pool else None,
        )
        dataset = recipe.build(first_epoch)
        return cls(
            dataset, ledger, urls, plan, cfg.data.error_budget, cfg.data.fail_on_unreadable_shard, recipe
        )

    def summary(self) -> dict[str, Any]:
        """The ledger's current counts (cheap; safe to poll while the stream runs)."""
        return ledger_get(self.ledger.summary.remote())

    def quarantine_records(self) -> list[dict[str, str]]:
        """Every quarantine record so far (shard, key, reason, detail)."""
        return ledger_get(self.ledger.records.remote())

    def finish(self, quarantine_log: str | Path | None = None) -> dict[str, Any]:
        """Final summary after the stream ended; writes the quarantine log and enforces the budget."""
        summary = self.summary()
        summary["shards"] = len(self.urls)
        summary["samples_ok"] = summary["samples_read"] - summary["samples_quarantined"]
        summary["pools"] = self.plan.describe()
        if quarantine_log is not None:
            # Written by the driver: the ledger actor may live on another node.
            write_quarantine_log(self.quarantine_records(), quarantine_log)
            summary["quarantine_log"] = str(quarantine_log)
        if self.fail_on_unreadable_shard and summary["shards_unreadable"]:
            raise RuntimeError(
                "unreadable shards (data.fail_on_unreadable_shard=true): "
                + ", ".join(summary["shards_unreadable"])
            )
        if summary["shards_unreadable"] and len(summary["shards_unreadable"]) == len(self.urls):
            raise RuntimeError("no shard could be read: " + ", ".join(summary["shards_unreadable"]))
        check_error_budget(summary, self.error_budget, log_hint=str(quarantine_log or "the quarantine log"))
        return summary


def ingest(cfg: Config, shards: str | list[str], tokenizer_json: str | None = None) -> Ingest:
    """The model-ready stream of ``shards`` through the per-modality actor pools (lazy: nothing runs until
    ``.dataset`` is consumed). Starts or joins Ray as ``cfg.ray`` says. ``tokenizer_json`` defaults to
    ``text.tokenizer``, else a tokenizer trained on the shards' captions. Call ``finish()`` after the stream
    for the counts and the error-budget check; the stream itself raises ``ErrorBudgetExceeded`` earlier, as
    soon as every shard was read and the quarantined fraction is already over ``data.error_budget``."""
    from mm_ray.data.captions import obtain_tokenizer
    from mm_ray.runtime import init_ray

    specs = [shards] if isinstance(shards, str) else list(shards)
    init_ray(cfg.ray)
    return Ingest.from_config(cfg, specs, tokenizer_json or obtain_tokenizer(cfg, specs))

"""The Ray Train (V2) adapter: the only module that imports ``ray.train``.

    from mm_ray.config.load import load_config
    from mm_ray.runtime import init_ray
    from mm_ray.train.ray_trainer import fit

    cfg = load_config("pipelines/demo.yaml", ["train.cache=runs/cache", "train.epochs=5"])
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    summary = fit(cfg)   # {"epochs_run", "metrics", "subsets", "checkpoint", "history", ...}

The driver (``fit``) reads the preprocessed cache, derives the model's input shapes from the cache's
manifest (image size, n_mels, text length) and tokenizer (vocabulary size), and hands the workers a flat
dict of plain values (``loop_config``). Each worker (``train_fn_per_worker``) builds the model, resumes from
the latest checkpoint if the run has one, and for every remaining epoch trains on its shard of ``train``,
evaluates every modality subset on ``val`` (rank 0 only: ``val`` is not split, so rank 0 sees all of it),
and reports metrics with a checkpoint written by ``mm_ray.train.checkpoint``.

Resuming: run ``fit`` again with the same ``name`` and ``train.storage_path``; Ray Train hands the
latest checkpoint to the workers, which continue at the next epoch up to ``train.epochs``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray.data
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from tokenizers import Tokenizer

from mm_ray.columns import KEY, LABEL, SHARD
from mm_ray.config.load import ConfigError, as_dict
from mm_ray.config.schema import Config
from mm_ray.data.cache import read_cache, with_cache_preprocessing
from mm_ray.models import build_model, param_groups
from mm_ray.preprocess.augment import augment_split, build_augmenter
from mm_ray.train.checkpoint import TOKENIZER_FILE, load_checkpoint, restore_into, save_checkpoint, unwrap
from mm_ray.train.loop import seed_everything, train_epoch
from mm_ray.train.metrics import SUBSETS, evaluate_subsets
from mm_ray.train.schedule import warmup_cosine

FULL_SUBSET = SUBSETS[-1]
"""The subset with every modality: its accuracy is the headline ``val_accuracy``."""


def train_fn_per_worker(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Train worker loop; ``config`` is ``loop_config``'s flat dict. Returns the run's per-epoch metrics
    (those of earlier attempts too, restored from the checkpoint)."""
    ctx = ray.train.get_context()
    seed_everything(config["seed"] + ctx.get_world_rank())
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(build_model(config["preset"], **config["model_kwargs"]))
    optimizer, scheduler = optimizer_and_schedule(model, config)
    start_epoch, history = _resume(model, optimizer, scheduler, device)
    autocast = torch.bfloat16 if config["bf16"] and device.type == "cuda" else None
    train_shard = ray.train.get_dataset_shard("train")
    # The audio settings the cache was made with say how a random gain shows in its features.
    augmenter = build_augmenter(
        config["augment"], seed=config["seed"], rank=ctx.get_world_rank(), audio=config["resolved"]["audio"]
    )
    nodes = _worker_nodes()
    for epoch in range(start_epoch, config["epochs"]):
        _fault_drill(config["fail_at_epoch"], epoch, start_epoch)
        started_at, started = time.time(), time.perf_counter()
        batches = train_shard.iter_torch_batches(
            batch_size=config["batch_size"], dtypes=None, prefetch_batches=config["prefetch_batches"]
        )
        batches = augment_split(batches, augmenter, split="train", epoch=epoch)
        stats = train_epoch(
            model,
            batches,
            optimizer,
            scheduler,
            device=device,
            grad_clip=config["grad_clip"] or None,
            autocast_dtype=autocast,
            aux_loss_weight=config["aux_loss_weight"],
            align_loss_weight=config["align_loss_weight"],
            align_temperature=config["align_temperature"],
        )
        stats["seconds"] = time.perf_counter() - started
        stats = _global_mean(stats, device)
        # resumed_from: the epochs this attempt restored from a checkpoint (a restart shows as a jump).
        metrics = {
            "epoch": epoch + 1,
            "step": scheduler.last_epoch,
            "resumed_from": start_epoch,
            **_prefixed("train", stats),
        }
        metrics["train_samples_per_s"] = stats["samples"] / max(stats["seconds"], 1e-9)
        # For `mm-ray bench train`: when the epoch began (start-up = run start to this) and the intra-op
        # threads torch really uses (Ray derives OMP_NUM_THREADS from the worker's CPUs).
        metrics["train_started_at"] = started_at
        metrics["train_torch_threads"] = torch.get_num_threads()
        metrics["worker_nodes"] = nodes
        if ctx.get_world_rank() == 0 and config["has_val"]:
            metrics.update(_validate(model, config["batch_size"], device, autocast))
        history.append(metrics)
        _report(metrics, history, model, optimizer, scheduler, config)
    return history


def optimizer_and_schedule(model: torch.nn.Module, config: dict[str, Any]) -> tuple[Any, Any]:
    """AdamW over the model's per-modality parameter groups and its warm-up + cosine schedule, from
    ``loop_config``'s dict: what every trainer of a run builds (the Ray workers, ``mm-ray bench train``)."""
    optimizer = torch.optim.AdamW(
        param_groups(unwrap(model), lr=config["lr"], lr_by_modality=config["lr_by_modality"]),
        weight_decay=config["weight_decay"],
    )
    scheduler = warmup_cosine(
        optimizer, warmup_steps=config["warmup_steps"], total_steps=config["total_steps"]
    )
    return optimizer, scheduler


def _fault_drill(fail_at_epoch: int, epoch: int, start_epoch: int) -> None:
    """``train.fail_at_epoch``: kill rank 0's process, as a crashed node would, once per run.

    Only a run that started from scratch fails: the restarted attempt resumes from a checkpoint
    (``start_epoch`` > 0), so it passes the same epoch and the run finishes.
    """
    first_attempt = start_epoch == 0
    if first_attempt and epoch + 1 == fail_at_epoch and ray.train.get_context().get_world_rank() == 0:
        # Ray Train's controller collects reports every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s): a
        # process that dies sooner after report() loses that checkpoint, as a real crash would. Wait
        # for the previous epoch's checkpoint to be registered so the drill always tests the restart.
        time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)))
        print(f"fault drill: rank 0 exits at the start of epoch {fail_at_epoch}", flush=True)
        os._exit(1)


def _resume(model, optimizer, scheduler, device: torch.device) -> tuple[int, list[dict[str, Any]]]:
    """Load the run's latest checkpoint, if any; returns (epochs already finished, their metrics)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as directory:
        state = load_checkpoint(directory, map_location=device)
    epochs = restore_into(state, model=model, optimizer=optimizer, scheduler=scheduler)
    return epochs, list(state.get("history", []))


def _worker_nodes() -> list[str]:
    """The Ray node ids the run's workers are on (every worker's, gathered): where a run really trained."""
    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_available() and dist.is_initialized()):
        return [node]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, node)
    return sorted(set(gathered))


def _global_mean(stats: dict[str, float | int], device: torch.device) -> dict[str, float | int]:
    """Sample-weighted loss/accuracy over every worker (each worker only saw its own shard)."""
    if not (dist.is_available() and dist.is_initialized()) or not stats["samples"]:
        return stats
    n = stats["samples"]
    sums = torch.tensor(
        [stats["loss"] * n, stats["accuracy"] * n, n, stats["steps"]], dtype=torch.float64, device=device
    )
    dist.all_reduce(sums)
    # The epoch lasts as long as its slowest worker.
    seconds = torch.tensor([stats["seconds"]], dtype=torch.float64, device=device)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    total = sums[2].item()
    return {
        "loss": sums[0].item() / total,
        "accuracy": sums[1].item() / total,
        "samples": int(total),
        "steps": int(sums[3].item()),
        "seconds": seconds.item(),
    }


def _validate(model, batch_size: int, device: torch.device, autocast) -> dict[str, float | int]:
    val = ray.train.get_dataset_shard("val").iter_torch_batches(batch_size=batch_size, dtypes=None)
    results = evaluate_subsets(model, val, SUBSETS, device=device, autocast_dtype=autocast)
    metrics: dict[str, float | int] = {
        "val_loss": results[FULL_SUBSET]["loss"],
        "val_accuracy": results[FULL_SUBSET]["accuracy"],
        "val_samples": results[FULL_SUBSET]["samples"],
    }
    for subset, r in results.items():
        metrics[f"subset/{subset}/accuracy"] = r["accuracy"]
        metrics[f"subset/{subset}/loss"] = r["loss"]
        metrics[f"subset/{subset}/samples"] = r["samples"]
    return metrics


def _report(
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    model,
    optimizer,
    scheduler,
    config: dict[str, Any],
) -> None:
    """Every rank reports; only rank 0 attaches a checkpoint (the model is the same on all ranks).

    The checkpoint is self-contained for ``mm-ray evaluate``: the resolved config (preprocessing
    sections included) is in its state and the tokenizer sits beside it as ``tokenizer.json``.
    """
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        saved_config = {k: v for k, v in config.items() if k != "tokenizer_json"}
        save_checkpoint(
            tmp,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            epoch=metrics["epoch"],
            config=saved_config,
            metrics=metrics,
            history=history,
        )
        Path(tmp, TOKENIZER_FILE).write_text(config["tokenizer_json"])
        # report() copies the directory to run storage before returning, so the temp dir can go.
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _prefixed(prefix: str, stats: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": v for k, v in stats.items()}


def _model_ready(ds: ray.data.Dataset) -> ray.data.Dataset:
    # Key/shard strings cannot become tensors; dropping them here also moves less data to the workers.
    return ds.select_columns([c for c in ds.columns() if c not in (KEY, SHARD)])


IN_MEMORY_FRACTION = 0.25
"""Datasets whose rows fit in this fraction of the cluster's object store are read once, before training."""


def _keep_in_memory(
    datasets: dict[str, ray.data.Dataset], manifests: dict[str, dict[str, Any]]
) -> dict[str, ray.data.Dataset]:
    """Read the datasets into the object store once when they all fit in ``IN_MEMORY_FRACTION`` of it.

    Streamed from Parquet, every epoch re-reads and re-decodes the cache in Ray Data tasks that compete with
    the workers for the CPUs (and wait forever when the workers hold all of them); kept in memory, an epoch
    only hands existing blocks to the workers (measured with `mm-ray bench train`). A cache larger than the
    budget still streams.
    """
    needed = sum(m["samples_ok"] * _row_bytes(m["shapes"]) for m in manifests.values())
    if needed > IN_MEMORY_FRACTION * ray.cluster_resources().get("object_store_memory", 0.0):
        return datasets
    return {name: ds.materialize() for name, ds in datasets.items()}


def _row_bytes(shapes: dict[str, list[int]]) -> int:
    """In-memory bytes of one model-ready row, from a cache manifest's shapes (dtypes: ``mm_ray.columns``)."""
    image = math.prod(shapes["image"])  # uint8
    text = shapes["input_ids"][0] * (4 + 1)  # int32 ids + int8 mask
    audio = math.prod(shapes["audio"]) * 4  # float32 log-mel
    return image + text + audio + 8 + 3  # int64 label, three bool presence flags


def loop_config(
    cfg: Config,
    manifest: dict[str, Any],
    *,
    num_classes: int,
    tokenizer_json: str,
    rows: int,
    has_val: bool,
) -> dict[str, Any]:
    """The workers' flat config: plain values only (it is pickled to every worker and saved in checkpoints,
    all but the tokenizer, which is saved beside them)."""
    vocab_size = Tokenizer.from_str(tokenizer_json).get_vocab_size()
    t, m, shapes = cfg.train, cfg.model, manifest["shapes"]
    rows_per_worker = math.ceil(rows / max(1, t.num_workers))
    total_steps = max(1, math.ceil(rows_per_worker / t.batch_size) * t.epochs)
    model_kwargs = {
        "modalities": list(m.modalities),
        "num_classes": num_classes,
        "image_size": shapes["image"][-1],
        "vocab_size": vocab_size,
        "n_mels": shapes["audio"][0],
        "max_text_len": shapes["input_ids"][0],
        "width": m.width,
        "depth": m.depth,
        "fusion_dim": m.fusion_dim,
        "rank": m.rank,
        "dropout": m.dropout,
        "modality_dropout": m.modality_dropout,
        "seed": t.seed,
        "text_encoder": m.text_encoder,
        "bidirectional": m.bidirectional,
        "fusion_weights": dict(m.fusion_weights),
        # The extra heads exist only when their loss is on: unused parameters would stall DDP's all-reduce.
        "aux_heads": t.aux_loss_weight > 0,
        "align_dim": m.align_dim if t.align_loss_weight > 0 else 0,
    }
    return {
        "preset": m.preset,
        "model_kwargs": model_kwargs,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "lr": t.lr,
        "lr_by_modality": dict(t.lr_by_modality),
        "weight_decay": t.weight_decay,
        # A warm-up longer than the run would never reach the peak lr.
        "warmup_steps": min(t.warmup_steps, total_steps),
        "total_steps": total_steps,
        "grad_clip": t.grad_clip,
        "seed": t.seed,
        "bf16": t.bf16,
        "prefetch_batches": t.prefetch_batches if t.prefetch_batches is not None else int(t.use_gpu),
        "fail_at_epoch": t.fail_at_epoch,
        "augment": as_dict(t.augment),
        "aux_loss_weight": t.aux_loss_weight,
        "align_loss_weight": t.align_loss_weight,
        "align_temperature": t.align_temperature,
        "has_val": has_val,
        "tokenizer_json": tokenizer_json,
        # Everything else needed to rebuild the inputs (image size, tokenizer length, mel settings), as the
        # cache was preprocessed: `mm-ray evaluate` must decode new shards the way the training data was.
        "resolved": with_cache_preprocessing(as_dict(cfg), manifest),
    }


def fit(cfg: Config) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.train.cache`` with Ray Train (needs Ray running); returns a summary.

    Running it again with the same ``name`` and storage resumes from the run's latest checkpoint.
    """
    trainer = build_trainer(cfg)
    return _summary(trainer.fit(), trainer.train_loop_config["model_kwargs"]["num_classes"])


def build_trainer(cfg: Config, *, callbacks: Sequence[Any] = ()) -> ray.train.torch.TorchTrainer:
    """The ``TorchTrainer`` that ``fit`` runs, not started yet: the run ``<storage>/<name>`` of ``cfg``.

    ``callbacks`` are Ray Train callbacks; a Tune trial passes ``TuneReportCallback`` so that every epoch's
    metrics reach its scheduler (``mm_ray.tune.trainable``).
    """
    t = cfg.train
    if not t.cache:
        raise ConfigError("train.cache: required (a directory written by `mm-ray preprocess --out DIR`)")
    train_ds, manifest = read_cache(t.cache)
    datasets = {"train": _model_ready(train_ds)}
    if t.val_cache:
        val_ds, val_manifest = read_cache(t.val_cache)
        _check_same_tokenizer(t.cache, manifest, t.val_cache, val_manifest)
        datasets["val"] = _model_ready(val_ds)
    if t.fail_at_epoch == 1 or t.fail_at_epoch < 0:
        raise ConfigError(f"train.fail_at_epoch: must be 0 (off) or >= 2, got {t.fail_at_epoch}")
    # Before the datasets are materialized: streamed, the aggregation reads the label column alone.
    num_classes = cfg.model.num_classes or 1 + max(int(ds.max(LABEL)) for ds in datasets.values())
    manifests = {"train": manifest, **({"val": val_manifest} if t.val_cache else {})}
    datasets = _keep_in_memory(datasets, manifests)
    config = loop_config(
        cfg,
        manifest,
        num_classes=num_classes,
        tokenizer_json=(Path(t.cache) / manifest["tokenizer"]).read_text(),
        rows=manifest["samples_ok"],
        has_val="val" in datasets,
    )
    return ray.train.torch.TorchTrainer(
        train_fn_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=cfg.name,
            storage_path=_storage_path(t.storage_path or cfg.output_dir),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.checkpoints_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
            callbacks=list(callbacks),
        ),
        datasets=datasets,
        # Only train is split across workers: rank 0 validates on the whole val set.
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )


def _summary(result: Any, num_classes: int) -> dict[str, Any]:
    if result.error is not None:
        raise result.error
    # Ray Train's local mode (num_workers=0) keeps no run storage: its "checkpoint" is a deleted temp dir.
    checkpoint = result.checkpoint if result.path is not None else None
    # A resumed run with no epoch left reports nothing: fall back on the metrics saved with its checkpoint.
    metrics = dict(result.metrics or load_checkpoint_metrics(checkpoint))
    subsets: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if key.startswith("subset/"):
            _, subset, name = key.split("/")
            subsets.setdefault(subset, {})[name] = value
    return {
        "run_path": str(result.path) if result.path is not None else None,
        "checkpoint": checkpoint.path if checkpoint is not None else None,
        "epochs_run": int(metrics.get("epoch", 0)),
        "worker_nodes": metrics.get("worker_nodes", []),
        "num_classes": num_classes,
        "metrics": {k: v for k, v in metrics.items() if not k.startswith("subset/")},
        "subsets": subsets,
        "history": list(result.return_value or []),
    }


def load_checkpoint_metrics(checkpoint: ray.train.Checkpoint | None) -> dict[str, Any]:
    """The metrics saved with a checkpoint (what a resumed run that had nothing left to do reports)."""
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as directory:
        return dict(load_checkpoint(directory)["metrics"])


def _check_same_tokenizer(cache: str, manifest: dict, val_cache: str, val_manifest: dict) -> None:
    ours = (Path(cache) / manifest["tokenizer"]).read_text()
    theirs = (Path(val_cache) / val_manifest["tokenizer"]).read_text()
    if ours != theirs:
        raise ConfigError(
            f"train.val_cache: {val_cache} was tokenized with a different tokenizer than {cache}; "
            "preprocess it with `text.tokenizer=<train cache>/tokenizer.json`"
        )


def _storage_path(path: str) -> str:
    # Ray Train wants an absolute local path or a URI; a relative path would resolve on each node.
    return path if "://" in path else str(Path(path).expanduser().resolve())

"""Score a trained checkpoint on any shard set, per modality subset, through the real preprocessing pipeline.

Usage (``mm-ray evaluate CHECKPOINT SHARDS...`` is the command-line form)::

    from mm_ray.train.evaluate import evaluate

    result = evaluate("runs/demo", ["shards/val-*.tar"], overrides=["pools.image.num_cpus=0.5"])
    result["checkpoint"]                 # the checkpoint used: a run directory means its latest one
    result["subsets"]["image+audio"]     # {"accuracy": 0.81, "loss": 0.52, "samples": 400} (the task's metrics)
    result["classes"]                    # [{"class": "cat", "id": 0, "samples": 120, "accuracy": 0.9}, ...]

A checkpoint written by the Ray Train adapter is self-contained: its state holds the weights, the
model spec (``LoopConfig.model``), and the run's resolved config (each modality's settings, the member
mapping ...); ``tokenizer.json`` sits beside it. The shards go through the same per-modality actor
pools as ``mm-ray preprocess`` with those settings, so a checkpoint scores new shards exactly as its
training run scored its validation cache. ``overrides`` (dotted ``key=value``) and a YAML ``config_file``
are laid over the saved config: meant for the cluster at hand (``pools.*``, ``ray.*``, ``data.*``). A
checkpoint is data, not settings: its saved ``ray.*`` and ``data.storage_options`` are never used. An
input size the model was not trained on (``image.size``, ``text.max_length``, the audio feature rows, ...) is
refused with a ``ConfigError`` naming the keys.

``checkpoint_dir`` may also be a run directory (``<storage>/<name>``, Ray Train's ``checkpoint_<timestamp>``
directories inside): the checkpoint with the most finished epochs is used (the later name on a tie).

Memory: ``evaluate_subsets`` scores every subset on each batch in one pass, so batches are consumed as they
stream out of the pipeline and nothing is collected; memory stays at Ray Data's in-flight limit
(``data.memory_limit_mb``) plus one batch per subset, however large the shard set.

Starts a local Ray or joins ``ray.address`` (a running Ray is reused).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mm_ray.data.pipeline import Ingest
from mm_ray.modalities.registry import modalities_of
from mm_ray.progress import ProgressFactory, watch
from mm_ray.runtime import init_ray
from mm_ray.tasks import task_of
from mm_ray.train.autocast import scoring_dtype
from mm_ray.train.checkpoint import LoadedCheckpoint, open_checkpoint, open_for_shards
from mm_ray.train.ensemble import PredictionAverage, check_compatible
from mm_ray.train.metrics import evaluate_subsets


def _presets(checkpoints: Sequence[LoadedCheckpoint]) -> list[str]:
    return [c.loop.model.name for c in checkpoints]


def evaluate(
    checkpoint_dir: str | Path,
    specs: str | Sequence[str],
    *,
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    quarantine_log: str | Path | None = None,
    progress: ProgressFactory | None = None,
    ensemble: Sequence[str | Path] = (),
    workers: int | None = None,
) -> dict[str, Any]:
    """Score the checkpoint on the shards ``specs`` (default: the config's ``data.val_shards``).

    ``ensemble``: more checkpoints (or run directories) whose predicted probabilities are averaged with this
    one's (model-level fusion, ``mm_ray.train.ensemble``); they must share its tokenizer and input shapes.
    ``workers``: score on that many Ray actors (model replicas), each on its part of the stream, the sums added
    up (``mm_ray.train.score_workers``: the path of a training run's distributed validation); each actor
    reserves ``train.cpus_per_worker`` CPUs and a GPU with ``train.use_gpu``. None (the default): one actor,
    or this process for an ``ensemble`` or a given ``device``; 0: this process (the model in the driver).

    ``batch_size`` defaults to the training batch size; ``device`` to CUDA when available. ``progress`` draws
    progress (``mm_ray.progress``).
    Raises ``CheckpointError``, ``ConfigError``, ``ShardSpecError``, or ``ErrorBudgetExceeded`` when too
    many samples are quarantined.
    """
    started = time.perf_counter()
    ckpt, cfg, specs = open_for_shards(checkpoint_dir, specs, overrides, config_file, purpose="evaluate on")
    if workers is None:
        workers = 0 if ensemble or device is not None else 1
    if workers and ensemble:
        raise ValueError("evaluate: --workers scores one checkpoint; score an ensemble in one process")
    task = task_of(ckpt.loop.resolved.task)
    if ensemble and task.kind != "classification":
        raise ValueError(f"evaluate: --ensemble averages class probabilities; not for task.kind={task.kind}")
    if workers:
        return _evaluate_on_workers(ckpt, cfg, specs, workers, batch_size, quarantine_log, progress, started)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # The caller's own model.builder and plug-ins are the only code any of the checkpoints may name (checked on
    # opening).
    trusted = {"builder": ckpt.trusted_builder, "plugins": ckpt.trusted_plugins}
    members = [open_checkpoint(path, **trusted) for path in ensemble]
    model = ckpt.restore_model(device)
    if members:
        check_compatible([ckpt, *members])
        model = PredictionAverage([model, *(m.restore_model(device) for m in members)]).to(device)
    loop = ckpt.loop
    # The same autocast as the training run's validation, so the scores are comparable.
    autocast = scoring_dtype(loop.precision, device, legacy_bf16=loop.bf16)
    init_ray(cfg.ray)
    ingest = Ingest.from_config(cfg, specs, ckpt.tokenizer_json)
    with watch(progress, "evaluate", lambda: ingest.summary()["samples_read"]):
        # __key__/__shard__ are strings: to_device (inside evaluate_subsets) drops them.
        batches = ingest.dataset.iter_batches(batch_size=batch_size or loop.batch_size, batch_format="numpy")
        outputs = loop.model.num_classes
        per_class = task.class_meter(outputs)
        registry = modalities_of(cfg)
        subsets = evaluate_subsets(
            model,
            batches,
            device=device,
            registry=registry,
            autocast_dtype=autocast,
            per_class=per_class,
            meter=lambda: task.meter(outputs),
        )
    summary = ingest.finish(quarantine_log=quarantine_log)  # after the stream: the ledger's counts are final
    preset = loop.model.name if not members else "ensemble of " + " + ".join(_presets([ckpt, *members]))
    full = registry.full_subset
    return _result(ckpt, preset, members, subsets, per_class, summary, str(device), started, full)


def _evaluate_on_workers(
    ckpt, cfg, specs, workers, batch_size, quarantine_log, progress, started
) -> dict[str, Any]:
    """``evaluate`` with ``workers`` scoring actors (``score_on_workers``), their CPUs kept free of the pools."""
    from mm_ray.train.score_workers import score_on_workers

    t = cfg.train
    init_ray(cfg.ray)
    ingest = Ingest.from_config(
        cfg,
        specs,
        ckpt.tokenizer_json,
        train_cpus=workers * t.cpus_per_worker,
        train_resources=t.worker_resources,
    )
    with watch(progress, "evaluate", lambda: ingest.summary()["samples_read"]):
        meters, per_class = score_on_workers(
            ckpt,
            ingest.dataset,
            workers=workers,
            batch_size=batch_size or ckpt.loop.batch_size,
            num_cpus=t.cpus_per_worker,
            num_gpus=1 if t.use_gpu else 0,
        )
    subsets = {subset: meter.result() for subset, meter in meters.items()}
    summary = ingest.finish(quarantine_log=quarantine_log)
    device = f"{workers} scoring actor{'s' if workers > 1 else ''} ({'GPU' if t.use_gpu else 'CPU'})"
    full = modalities_of(cfg).full_subset
    return _result(ckpt, ckpt.loop.model.name, [], subsets, per_class, summary, device, started, full)


def _result(
    ckpt, preset, members, subsets, per_class, summary, device: str, started: float, full: str
) -> dict[str, Any]:
    task = task_of(ckpt.loop.resolved.task)
    return {
        "checkpoint": str(ckpt.directory),
        "task": task.kind,
        "picked_from": str(ckpt.picked_from) if ckpt.picked_from is not None else None,
        "epoch": ckpt.epoch,
        "preset": preset,
        "ensemble": [str(m.directory) for m in members] or None,
        "samples": subsets[full]["samples"],
        "quarantined": summary["samples_quarantined"],
        "quarantine_reasons": summary["quarantine_reasons"],
        "shards": summary["shards"],
        "shards_unreadable": summary["shards_unreadable"],
        "pools": summary["pools"],
        "device": device,
        "seconds": round(time.perf_counter() - started, 2),
        "subsets": subsets,
        # Per class (tag, target) with every modality: accuracy, or precision/recall/F1/AP, or MAE/RMSE/R2;
        # named when the run's labels had names.
        "classes": task.class_table(per_class, ckpt.classes),
    }

"""The Ray Train (V2) driver: ``fit`` trains a config's model with Ray Train and writes its run outputs.

    import mm_ray

    cfg = mm_ray.load_config("pipelines/demo.yaml", ["train.cache=runs/cache", "train.epochs=5"])
    result = mm_ray.fit(cfg)            # starts or joins Ray as cfg.ray says
    result.metrics["val_accuracy"], result.subsets["image+audio"], result.outputs["curves_png"]

    # or straight from the shards, decoded by the ingest actor pools every epoch while the workers train:
    cfg = mm_ray.load_config("pipelines/demo.yaml", ["data.shards=[shards/train-*.tar]", "model.num_classes=4"])

The driver opens its inputs (``mm_ray.train.inputs``: the preprocessed caches, or the ingest pipeline over the
shards), derives the model's input shapes from them, and hands the workers one frozen ``LoopConfig`` (``mm_ray.train.spec``); the
workers run ``mm_ray.train.worker.train_fn_per_worker``. Every epoch's metrics come back to the driver as
they happen (``on_epoch``, and an INFO line on the ``mm_ray`` logger), and the run directory
``<output_dir>/<name>`` gets metrics, curves, config and summary (``mm_ray.train.outputs``).

Tracking (``track.*``): the driver logs the run to TensorBoard (``<output_dir>/<name>/tensorboard``, on by
default) and to MLflow (``track.mlflow``) as the epochs arrive (``mm_ray.track.run``); ``result.tracking``
says where.

Resuming: run ``fit`` again with the same ``name`` and ``train.storage_path``; Ray Train hands the
latest checkpoint to the workers, which continue at the next epoch up to ``train.epochs``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from tokenizers import Tokenizer

from mm_ray.cluster.storage import warn_if_unshared
from mm_ray.config.load import ConfigError, as_dict
from mm_ray.config.schema import Config
from mm_ray.data.captions import check_encoder_tokenizer
from mm_ray.models.builder import resolve_builder
from mm_ray.placement import check_workers
from mm_ray.runtime import cluster_nodes, init_ray
from mm_ray.tasks import headline_metric
from mm_ray.track.run import RunTracker
from mm_ray.train.checkpoint import load_checkpoint
from mm_ray.train.data_config import SplitConfig
from mm_ray.train.datasets import RESUME_DATASET
from mm_ray.train.encoder_weights import with_backbone_weights_from_runs
from mm_ray.train.inputs import TrainInputs, train_inputs
from mm_ray.train.outputs import write_run_outputs
from mm_ray.train.progress import epoch_line
from mm_ray.train.resume import storage_path
from mm_ray.train.spec import LoopConfig
from mm_ray.train.worker import train_fn_per_worker, worker_config

logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What ``fit`` returns: where the run is, its final metrics, and every epoch's."""

    name: str
    preset: str
    run_dir: str
    """``<output_dir>/<name>``: metrics.jsonl/csv, config.yaml, summary.json, curves.png."""
    run_path: str | None
    """Ray Train's run storage (checkpoints); None in local mode (``train.num_workers=0``)."""
    checkpoint: str | None
    """The run's last checkpoint directory."""
    epochs_run: int
    num_classes: int
    worker_nodes: list[str]
    metrics: dict[str, Any]
    """The last epoch's metrics (``val_accuracy``, ``train_loss``, ...)."""
    subsets: dict[str, dict[str, Any]]
    """Validation metrics (the task's: accuracy, or map/F1, or r2/mae/rmse), loss and samples per modality subset
    (``image``, ..., ``image+text+audio``)."""
    history: list[dict[str, Any]]
    outputs: dict[str, str]
    source: str = "cache"
    """What the workers read: ``cache`` (``train.cache``) or ``shards`` (``data.shards`` streamed)."""
    ingest: dict[str, Any] | None = None
    """``shards`` only: the ingest's counts over the run (samples read, quarantined by reason, pools)."""
    best_checkpoint: str | None = None
    """The kept checkpoint (``train.checkpoints_to_keep``) with the highest headline metric (``val_accuracy``;
    ``val_map``, ``val_r2`` for the other tasks; the last one when the run does not validate)."""
    best_epoch: int | None = None
    """The epoch ``best_checkpoint`` was saved at."""
    tracking: dict[str, str] = dataclasses.field(default_factory=dict)
    """Where the run is logged (``track.*``): ``tensorboard`` (log dir), ``mlflow_uri``,
    ``mlflow_experiment``, ``mlflow_run_id``."""

    @property
    def val_accuracy(self) -> float:
        return float(self.metrics.get("val_accuracy", float("nan")))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fit(cfg: Config, *, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train ``cfg.model`` with Ray Train on ``train.cache``, or straight from ``data.shards`` through the
    ingest actor pools when no cache is set; returns the run's ``TrainResult``.

    ``on_epoch`` is called on the driver with each epoch's metrics as the epoch ends. Running it again with
    the same ``name`` and storage resumes from the run's latest checkpoint. Raises ``ConfigError`` naming the
    key for bad settings, before any worker starts.
    """
    init_ray(cfg.ray)
    warn_if_unshared(cfg.train.storage_path or cfg.output_dir)
    inputs = train_inputs(cfg)
    run_dir = Path(cfg.output_dir) / cfg.name
    # Rank 0's metrics reach the driver through the relay as each epoch ends: the tracker logs them there,
    # so tracking stays live and needs nothing from the worker nodes.
    tracker = RunTracker.open(cfg, run_dir)
    for backend, where in tracker.where.items():
        logger.info("tracking: %s %s", backend, where)
    try:
        relay = EpochRelay.start(cfg.train.epochs, _tracked(on_epoch, tracker))
        try:
            trainer = build_trainer(cfg, callbacks=[relay.callback], inputs=inputs)
            outcome = trainer.fit()
        finally:
            relay.stop()
        loop: LoopConfig = trainer.train_loop_config["loop"]
        summary = _summary(outcome, headline_metric(cfg.task)[0])
        if "train" in inputs.streams:
            # The whole run's quarantine (every epoch re-read the same shards: each bad sample counted once).
            summary["ingest"] = inputs.streams["train"].finish(run_dir / "quarantine.jsonl")
        about = {
            "name": cfg.name,
            "preset": cfg.model.builder or cfg.model.preset,
            "run_dir": str(run_dir),
            "num_classes": loop.model.num_classes,
            "source": inputs.source,
        }
        outputs = write_run_outputs(run_dir, config=as_dict(cfg), summary={**about, **summary})
        tracker.finish(
            summary["history"],
            artifacts={name: outputs[key] for name, key in TRACKED_OUTPUTS.items()},
            best_checkpoint=summary["best_checkpoint"],
            best_epoch=summary["best_epoch"],
        )
    finally:
        tracker.close("FAILED")  # a no-op after finish()
    return TrainResult(outputs=outputs, tracking=dict(tracker.where), **about, **summary)


TRACKED_OUTPUTS = {"curves.png": "curves_png", "config.yaml": "config_yaml", "summary.json": "summary_json"}
"""Run outputs uploaded to the MLflow run as artifacts (an allow-list: nothing else in the run dir goes)."""


def _tracked(on_epoch: EpochCallback | None, tracker: RunTracker) -> EpochCallback:
    """``on_epoch`` after logging the epoch to the tracker; a tracking failure is a warning, not a failed run."""

    def log_then_call(metrics: dict[str, Any]) -> None:
        try:
            tracker.log_epoch(metrics)
        except Exception:
            logger.warning("tracking: epoch %s not logged", metrics.get("epoch"), exc_info=True)
        if on_epoch is not None:
            on_epoch(metrics)

    return log_then_call


def build_trainer(
    cfg: Config, *, callbacks: Sequence[Any] = (), inputs: TrainInputs | None = None
) -> ray.train.torch.TorchTrainer:
    """The ``TorchTrainer`` that ``fit`` runs, not started yet: the run ``<storage>/<name>`` of ``cfg``.

    ``callbacks`` are Ray Train callbacks; a Tune trial passes ``TuneReportCallback`` so that every epoch's
    metrics reach its scheduler (``mm_ray.tune.trainable``). ``inputs`` defaults to ``train_inputs(cfg)``:
    the cache, or the shards streamed through the ingest pools.
    """
    t = cfg.train
    if t.fail_at_epoch == 1 or t.fail_at_epoch < 0:
        raise ConfigError(f"train.fail_at_epoch: must be 0 (off) or >= 2, got {t.fail_at_epoch}")
    check_large_run_options(cfg)
    inputs = inputs or train_inputs(cfg)
    check_encoder_tokenizer(cfg, inputs.tokenizer_json)
    cfg = with_backbone_weights_from_runs(cfg)
    loop = LoopConfig.for_run(
        cfg,
        shapes=inputs.shapes,
        vocab_size=Tokenizer.from_str(inputs.tokenizer_json).get_vocab_size(),
        num_classes=inputs.num_classes,
        rows=inputs.rows,
        has_val="val" in inputs.datasets,
        preprocessing=inputs.preprocessing,
        cropped_at_decode=inputs.cropped_at_decode,
    )
    if loop.model.builder:  # here, naming the key, rather than first inside every worker
        resolve_builder(loop.model.builder)
    if t.num_workers:  # here, naming the key, rather than a placement group pending forever
        check_workers(
            cluster_nodes(), t.worker_resources, t.cpus_per_worker, float(t.use_gpu), "train.worker_resources"
        )
    train_stream = inputs.streams.get("train")
    return ray.train.torch.TorchTrainer(
        train_fn_per_worker,
        train_loop_config=worker_config(
            loop,
            inputs.tokenizer_json,
            # Streaming: the workers read the ledger's counts into every epoch's metrics.
            ledger=train_stream.ledger if train_stream else None,
            error_budget=cfg.data.error_budget,
            one_execution=inputs.one_execution,
        ),
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            # Custom resources (train.worker_resources) pin the workers to the nodes that declare them.
            resources_per_worker={
                "CPU": t.cpus_per_worker,
                **({"GPU": 1} if t.use_gpu else {}),
                **t.worker_resources,
            },
        ),
        run_config=ray.train.RunConfig(
            name=cfg.name,
            storage_path=storage_path(t.storage_path or cfg.output_dir),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.checkpoints_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
            callbacks=list(callbacks),
        ),
        datasets=inputs.datasets,
        # Training splits equally (the workers step together), validation row for row (every worker scores
        # its part: distributed validation). One worker needs no split: it iterates the dataset itself,
        # without a split coordinator actor (a process less to start, an RPC less per block).
        dataset_config=(
            SplitConfig(split=["train", RESUME_DATASET], whole_rows=["val"])
            if t.num_workers > 1
            # One execution for every epoch: read in order, so that the epochs follow one another.
            else SplitConfig(ordered=["train"] if inputs.one_execution else ())
        ),
    )


def check_large_run_options(cfg: Config) -> None:
    """``ConfigError`` naming the key for ``train.*`` large-run settings that cannot work together, before
    any worker starts."""
    t = cfg.train
    if t.grad_accum_steps < 1:
        raise ConfigError(f"train.grad_accum_steps: must be >= 1, got {t.grad_accum_steps}")
    if t.checkpoint_every_steps < 0 or t.fail_at_step < 0:
        raise ConfigError("train.checkpoint_every_steps / train.fail_at_step: must be >= 0")
    if t.precision == "fp16" and not t.use_gpu:
        raise ConfigError("train.precision: fp16 needs GPU workers (train.use_gpu=true); use bf16 on CPU")
    if cfg.model.preset == "cgan" and (
        t.grad_accum_steps > 1 or t.precision == "fp16" or t.strategy == "fsdp"
    ):
        raise ConfigError(
            "train.grad_accum_steps/precision/strategy: the adversarial cgan trains with its own two-phase step, "
            "without accumulation, fp16 loss scaling or FSDP"
        )
    if t.checkpoint_every_steps and not t.num_workers:
        raise ConfigError(
            "train.checkpoint_every_steps: local mode (train.num_workers=0) keeps no checkpoints"
        )


def _summary(result: Any, headline: str = "val_accuracy") -> dict[str, Any]:
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
    nodes = metrics.get("worker_nodes") or ""
    best_path, best_epoch = _best_checkpoint(result, headline) if checkpoint is not None else (None, None)
    return {
        "run_path": str(result.path) if result.path is not None else None,
        "checkpoint": checkpoint.path if checkpoint is not None else None,
        "best_checkpoint": best_path,
        "best_epoch": best_epoch,
        "epochs_run": int(metrics.get("epoch", 0)),
        "worker_nodes": nodes.split(",") if isinstance(nodes, str) and nodes else list(nodes),
        "metrics": {k: v for k, v in metrics.items() if not k.startswith("subset/")},
        "subsets": subsets,
        "history": list(result.return_value or []),
    }


def _best_checkpoint(result: Any, headline: str = "val_accuracy") -> tuple[str | None, int | None]:
    """(path, epoch) of the kept checkpoint with the highest ``headline`` (the task's: ``val_accuracy``,
    ``val_map``, ``val_r2``; ties: the later one); the last checkpoint when no kept one has it."""
    kept = [(c, m) for c, m in result.best_checkpoints or [] if "epoch" in m]
    scored = [(c, m) for c, m in kept if _finite(m.get(headline))]
    if scored:
        checkpoint, metrics = max(scored, key=lambda cm: (cm[1][headline], cm[1]["epoch"]))
    elif kept:
        checkpoint, metrics = max(kept, key=lambda cm: cm[1]["epoch"])
    else:
        return result.checkpoint.path, None
    return checkpoint.path, int(metrics["epoch"])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def load_checkpoint_metrics(checkpoint: ray.train.Checkpoint | None) -> dict[str, Any]:
    """The metrics saved with a checkpoint (what a resumed run that had nothing left to do reports)."""
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as directory:
        return dict(load_checkpoint(directory)["metrics"])


class _RelayCallback(ray.train.UserCallback):
    """Runs in the Train controller: forwards rank 0's metrics of each report to the driver's queue."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        # Epoch reports only: a step checkpoint's report carries no "epoch" (mm_ray.train.worker).
        if metrics and "epoch" in metrics[0]:
            self.queue.put(metrics[0])


@dataclasses.dataclass
class EpochRelay:
    """Brings each epoch's metrics from the Train controller to the driver while ``trainer.fit()`` blocks.

    The controller is another process; a ``ray.util.queue.Queue`` (an actor holding no CPU, on the driver's
    node) carries the metrics, and a thread on the driver hands them to ``on_epoch`` and the ``mm_ray`` logger.
    """

    callback: _RelayCallback
    thread: threading.Thread
    done: threading.Event

    @classmethod
    def start(cls, epochs: int, on_epoch: EpochCallback | None) -> EpochRelay:
        from ray.util.queue import Empty, Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # Pinned to the driver's node: left to the scheduler it may land on a worker node, and losing that
        # node would then fail the whole run (the controller's callback raises) instead of restarting it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        done = threading.Event()

        def drain() -> None:
            while True:
                try:
                    metrics = queue.get(timeout=0.5)
                except Empty:
                    if done.is_set():
                        return
                    continue
                logger.info(epoch_line(metrics, epochs))
                if on_epoch is not None:
                    on_epoch(metrics)

        thread = threading.Thread(target=drain, name="mm_ray-epochs", daemon=True)
        thread.start()
        return cls(_RelayCallback(queue), thread, done)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)
        ray.kill(self.callback.queue.actor)

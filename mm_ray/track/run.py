"""``RunTracker``: one training run logged to TensorBoard and MLflow, from the driver, epoch by epoch.

    tracker = RunTracker.open(cfg, run_dir)     # per cfg.track; does nothing when both are off
    tracker.log_epoch(metrics)                  # rank 0's metrics of one epoch, as the epoch ends
    tracker.finish(history, artifacts={"curves.png": path}, best_checkpoint=path, best_epoch=3)
    tracker.where                               # {"tensorboard": dir, "mlflow_run_id": id, ...}

``mm_ray.fit`` feeds it the metrics that its epoch relay brings from the Train controller, so curves grow
while the run trains, and every write happens in the driver's process: a TensorBoard directory or MLflow file
store on the driver's disk works on a multi-node cluster too (the workers never touch it).

What is logged, per backend:

===============  ==========================================  ============================================
                 TensorBoard (``<run_dir>/tensorboard``)      MLflow (``track.experiment``, run ``name``)
===============  ==========================================  ============================================
config           text ``config`` (YAML)                       params: the flattened config, secrets out
each epoch       scalars, step = epoch (``+`` becomes ``_``)   metrics, step = epoch (the same names)
at the end       image ``curves``, text ``best_checkpoint``   artifacts (curves.png, ...), tags
                                                              ``best_checkpoint``, ``best_epoch``
===============  ==========================================  ============================================

A run started again under the same name continues its MLflow run (found by its run directory) and skips the
epochs that run already has; TensorBoard gets a new event file in the same directory.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mm_ray.config.load import as_dict, persistable
from mm_ray.config.schema import Config
from mm_ray.track.mlflow_store import (
    allow_file_store,
    flat_params,
    import_mlflow,
    metric_name,
    tracked_metrics,
    tracking_uri,
)

logger = logging.getLogger(__name__)

RUN_DIR_TAG = "mm_ray.run_dir"
"""MLflow tag holding the run directory: how a run started again finds its MLflow run."""

TENSORBOARD_DIR = "tensorboard"
"""The TensorBoard log directory's name inside the run directory."""


@dataclasses.dataclass
class RunTracker:
    """The open TensorBoard writer and MLflow run of one training run (either may be None)."""

    writer: Any = None
    client: Any = None
    run_id: str | None = None
    where: dict[str, str] = dataclasses.field(default_factory=dict)
    """Where the run is logged: ``tensorboard`` (log dir), ``mlflow_uri``, ``mlflow_experiment``,
    ``mlflow_run_id``."""
    logged: set[int] = dataclasses.field(default_factory=set)
    """Epochs already logged (this process, or an earlier one into the same MLflow run)."""

    @classmethod
    def open(cls, cfg: Config, run_dir: str | Path) -> RunTracker:
        """Open the backends ``cfg.track`` asks for and log the run's params; ``ConfigError`` when
        ``track.mlflow`` is set and MLflow is not installed (before anything trains)."""
        tracker = cls()
        params = persistable(as_dict(cfg))
        if cfg.track.mlflow:
            tracker._open_mlflow(cfg, Path(run_dir).resolve(), params)
        if cfg.track.tensorboard:
            from tensorboardX import SummaryWriter

            logdir = Path(run_dir) / TENSORBOARD_DIR
            tracker.writer = SummaryWriter(str(logdir), flush_secs=10)
            tracker.writer.add_text("config", _as_code(yaml.safe_dump(params, sort_keys=False)), 0)
            tracker.where["tensorboard"] = str(logdir)
        return tracker

    def _open_mlflow(self, cfg: Config, run_dir: Path, config: dict[str, Any]) -> None:
        mlflow = import_mlflow()
        uri = tracking_uri(cfg.track.mlflow or "")
        allow_file_store(uri)
        client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(cfg.track.experiment)
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(cfg.track.experiment)
        )
        earlier = client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_DIR_TAG}` = '{run_dir}'", max_results=1
        )
        params = flat_params(config)
        saved: dict[str, str] = {}
        if earlier:
            run_id, saved = earlier[0].info.run_id, earlier[0].data.params
            client.update_run(run_id, status="RUNNING")
            self.logged = {int(m.step) for m in client.get_metric_history(run_id, "epoch")}
        else:
            run_id = client.create_run(
                experiment_id, run_name=cfg.name, tags={RUN_DIR_TAG: str(run_dir)}
            ).info.run_id
        # MLflow refuses to change a param: a run continued with other settings (more epochs, say) keeps
        # the values it started with and gets the new ones as ``resumed_with.<key>`` tags.
        fresh = [mlflow.entities.Param(k, v) for k, v in params.items() if k not in saved]
        changed = [
            mlflow.entities.RunTag(f"resumed_with.{k}", v)
            for k, v in params.items()
            if k in saved and saved[k] != v
        ]
        for start in range(0, len(fresh), 100):  # at most 100 params per batch
            client.log_batch(run_id, params=fresh[start : start + 100])
        for start in range(0, len(changed), 100):
            client.log_batch(run_id, tags=changed[start : start + 100])
        self.client, self.run_id = client, run_id
        self.where.update(mlflow_uri=uri, mlflow_experiment=cfg.track.experiment, mlflow_run_id=run_id)

    def log_epoch(self, metrics: Mapping[str, Any]) -> None:
        """Log one epoch's metrics (step = its ``epoch``); an epoch logged before is skipped."""
        epoch = int(metrics["epoch"])
        if epoch in self.logged:
            return
        self.logged.add(epoch)
        values = tracked_metrics(metrics)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(metric_name(key), value, epoch)
            self.writer.flush()
        if self.client is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = [Metric(metric_name(k), v, now, epoch) for k, v in values.items()]
            self.client.log_batch(self.run_id, metrics=batch)

    def finish(
        self,
        history: Sequence[Mapping[str, Any]],
        *,
        artifacts: Mapping[str, str] | None = None,
        best_checkpoint: str | None = None,
        best_epoch: int | None = None,
    ) -> None:
        """Log the epochs of ``history`` not logged yet (local mode relays none), the ``artifacts`` (name ->
        file; ``.png`` files also as TensorBoard images) and the best checkpoint; then close."""
        artifacts = artifacts or {}
        for metrics in history:
            self.log_epoch(metrics)
        last = max(self.logged, default=0)
        if self.writer is not None:
            for name, path in artifacts.items():
                if path.endswith(".png"):
                    self.writer.add_image(Path(name).stem, _rgb(path), last, dataformats="HWC")
            if best_checkpoint:
                self.writer.add_text("best_checkpoint", best_checkpoint, best_epoch or last)
        if self.client is not None:
            for path in artifacts.values():
                self.client.log_artifact(self.run_id, path)
            if best_checkpoint:
                self.client.set_tag(self.run_id, "best_checkpoint", best_checkpoint)
            if best_epoch is not None:
                self.client.set_tag(self.run_id, "best_epoch", str(best_epoch))
        self.close("FINISHED")

    def close(self, status: str = "FAILED") -> None:
        """End the MLflow run with ``status`` and close the TensorBoard writer (safe to call twice)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.client is not None:
            self.client.set_terminated(self.run_id, status=status)
            self.client = None


def _as_code(text: str) -> str:
    # TensorBoard renders text as Markdown: indenting by four spaces keeps the YAML as it is.
    return "\n".join("    " + line for line in text.splitlines())


def _rgb(path: str) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def view_commands(where: Mapping[str, str]) -> dict[str, str]:
    """How to look at a tracked run (``TrainResult.tracking`` or a sweep's ``tracking``): a command per backend.

    An MLflow server is opened in a browser; a local store is served by ``mlflow ui`` (the full ``mlflow``
    package: the ``[track]`` extra installs only the client)."""
    out = {}
    if "tensorboard" in where:
        out["tensorboard"] = f"tensorboard --logdir {where['tensorboard']}"
    uri = where.get("mlflow_uri")
    if uri:
        remote = uri.startswith(("http://", "https://"))
        out["mlflow"] = f"open {uri}" if remote else f"mlflow ui --backend-store-uri {uri}"
    return out

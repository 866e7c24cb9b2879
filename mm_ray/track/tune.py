"""A sweep's tracking with Ray Tune's own loggers: TensorBoard per trial, one MLflow run per trial.

    callbacks = tune_callbacks(cfg)            # pass to ray.tune.RunConfig(callbacks=...)
    with tune_logging(cfg.track):              # around Tuner.fit(), also when a sweep is resumed
        tuner.fit()
    sweep_tracking(cfg, experiment_path)       # {"tensorboard": ..., "mlflow_experiment": ...} for the summary

- TensorBoard: Tune's ``TBXLoggerCallback`` writes every trial's reported metrics (``ray/tune/<metric>``,
  step = the trial's report count, one per epoch) into the trial's directory of the experiment,
  ``<tune.storage_path or output_dir>/<name>/trial_<id>``: ``tensorboard --logdir`` on the experiment shows
  every trial side by side.
- MLflow: Ray's ``MLflowLoggerCallback`` (``TrialMlflowLogger`` below keeps its behaviour and only fixes
  metric names) creates the experiment ``<name>`` and one run per trial, named after the trial, with the
  trial's sampled parameters as params and every epoch's metrics. A trial continued by ``--resume`` gets a new
  run in the same experiment.

All of this runs in the Tune driver's process (Tune calls its logger callbacks there), so a local log
directory or MLflow file store only has to be on the driver's disk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from mm_ray.config.schema import Config, TrackConfig
from mm_ray.track.mlflow_store import (
    allow_file_store,
    import_mlflow,
    metric_name,
    tracked_metrics,
    tracking_uri,
)

SWEEP_TAG = "mm_ray.sweep"
"""MLflow tag naming the sweep on each trial's run."""


class TrialMlflowLogger(MLflowLoggerCallback):
    """Ray's ``MLflowLoggerCallback`` given only the numbers worth a curve, under names MLflow accepts:
    ``subset/image+audio/accuracy`` would make MLflow raise (``+`` is not allowed) and stop the sweep."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        kept: dict[str, Any] = {metric_name(k): v for k, v in tracked_metrics(result).items()}
        kept[TRAINING_ITERATION] = result[TRAINING_ITERATION]
        super().log_trial_result(iteration, trial, kept)


def tune_callbacks(cfg: Config) -> list[Any]:
    """Tune's result loggers for the sweep ``cfg``: CSV and JSON (the sweep's results are read from them),
    TensorBoard when ``track.tensorboard``, MLflow when ``track.mlflow`` (``ConfigError`` naming the
    ``[track]`` extra when MLflow is not installed)."""
    callbacks: list[Any] = [CSVLoggerCallback(), JsonLoggerCallback()]
    if cfg.track.tensorboard:
        callbacks.append(TBXLoggerCallback())
    if cfg.track.mlflow:
        import_mlflow()
        uri = tracking_uri(cfg.track.mlflow)
        callbacks.append(TrialMlflowLogger(uri, experiment_name=cfg.name, tags={SWEEP_TAG: cfg.name}))
    return callbacks


@contextlib.contextmanager
def tune_logging(track: TrackConfig) -> Iterator[None]:
    """Around ``Tuner.fit()``: with ``track.tensorboard`` off, Tune is told not to add its default loggers
    (TensorBoard is one; ``tune_callbacks`` gives the CSV and JSON ones); MLflow may open a configured local
    file store."""
    if track.mlflow:
        allow_file_store(tracking_uri(track.mlflow))
    if track.tensorboard:
        yield
        return
    saved = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = saved


def sweep_tracking(cfg: Config, experiment_path: str) -> dict[str, str]:
    """Where the sweep ``cfg`` is tracked (the keys of ``TrainResult.tracking``, for ``view_commands``)."""
    out: dict[str, str] = {}
    if cfg.track.tensorboard:
        out["tensorboard"] = experiment_path
    if cfg.track.mlflow:
        out.update(mlflow_uri=tracking_uri(cfg.track.mlflow), mlflow_experiment=cfg.name)
    return out

"""A sweep's tracking with Ray Tune's own loggers: TensorBoard per trial, one MLflow run per trial.

    callbacks = tune_callbacks(cfg)            # pass to ray.tune.RunConfig(callbacks=...)
    with tune_logging(cfg.track):              # around Tuner.fit(), also when a sweep is resumed
        tuner.fit()
    sweep_tracking(cfg, experiment_path)       # {"tensorboard": ..., "mlflow_experiment": ...} for the summary

- TensorBoard: Tune's ``TBXLoggerCallback`` writes every trial's reported metrics (``ray/tune/<metric>``,
  step = the trial's report count, one per epoch) into the trial's directory of the experiment,
  ``<tune.storage_path or output_dir>/<name>/trial_<id>``: ``tensorboard --logdir`` on the experiment shows
  every trial side by side.
- MLflow: the sweep is one parent run named ``<name>`` in the experiment ``track.experiment`` (the search
  space's and Tune's settings as params; at the end the best trial's metric and id); Ray's
  ``MLflowLoggerCallback`` (``TrialMlflowLogger`` below keeps its behaviour and only fixes metric names) logs one
  run per trial nested under it (MLflow's ``mlflow.parentRunId`` tag), named after the trial, with the trial's
  sampled parameters as params and every epoch's metrics. A sweep continued by ``--resume`` keeps its parent run;
  a continued trial gets a new run under it.

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

from mm_ray.config.load import as_dict, persistable
from mm_ray.config.schema import Config, TrackConfig
from mm_ray.track.artifacts import experiment_id
from mm_ray.track.mlflow_store import (
    allow_file_store,
    flat_params,
    import_mlflow,
    metric_name,
    tracked_metrics,
    tracking_uri,
)

SWEEP_TAG = "mm_ray.sweep"
"""MLflow tag naming the sweep on its parent run and each trial's run."""
PARENT_TAG = "mm_ray.sweep_parent"
"""MLflow tag marking a sweep's parent run (value ``true``)."""
NESTED_TAG = "mlflow.parentRunId"
"""MLflow's own tag nesting a run under another (the UI shows trials under their sweep)."""


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
        uri = tracking_uri(cfg.track.mlflow)
        parent = sweep_parent_run(cfg)
        tags = {SWEEP_TAG: cfg.name, NESTED_TAG: parent}
        callbacks.append(TrialMlflowLogger(uri, experiment_name=cfg.track.experiment, tags=tags))
    return callbacks


def _client(cfg: Config) -> tuple[Any, str]:
    mlflow = import_mlflow()
    uri = tracking_uri(cfg.track.mlflow or "")
    allow_file_store(uri)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    return client, experiment_id(client, cfg.track.experiment)


def sweep_parent_run(cfg: Config) -> str:
    """The id of the sweep ``cfg.name``'s parent run in ``track.experiment``: the one an earlier start of the same
    sweep made, else a new one with the sweep's settings (``tune.*``, the preset's model keys) as params."""
    client, experiment = _client(cfg)
    earlier = client.search_runs(
        [experiment],
        filter_string=f"tags.`{SWEEP_TAG}` = '{cfg.name}' and tags.`{PARENT_TAG}` = 'true'",
        max_results=1,
    )
    if earlier:
        client.update_run(earlier[0].info.run_id, status="RUNNING")
        return earlier[0].info.run_id
    run = client.create_run(experiment, run_name=cfg.name, tags={SWEEP_TAG: cfg.name, PARENT_TAG: "true"})
    from mlflow.entities import Param

    params = flat_params(persistable(as_dict(cfg))["tune"], prefix="tune.")
    for start in range(0, len(params), 100):
        batch = list(params.items())[start : start + 100]
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in batch])
    return run.info.run_id


def finish_sweep_run(cfg: Config, best: dict[str, Any] | None) -> str | None:
    """Log the best trial on the sweep's parent run and mark it finished; returns its id (None: no MLflow)."""
    if not cfg.track.mlflow:
        return None
    client, _ = _client(cfg)
    run_id = sweep_parent_run(cfg)
    if best is not None:
        client.set_tag(run_id, "best_trial", str(best.get("trial_id")))
        value = best.get("best")
        if isinstance(value, (int, float)):
            from mm_ray.tasks import headline_metric

            metric = cfg.tune.metric or headline_metric(cfg.task)[0]  # unset: the task's headline
            client.log_metric(run_id, metric_name(f"best_{metric}"), float(value))
    client.set_terminated(run_id)
    return run_id


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
        out.update(mlflow_uri=tracking_uri(cfg.track.mlflow), mlflow_experiment=cfg.track.experiment)
    return out

"""MLflow runs that hold files rather than curves: an exported model logged as a run's ``model`` artifact.

    run_id = log_export("exports/demo", cfg.track, run_name="export gated")

The run goes to ``track.experiment`` at ``track.mlflow`` (the caller's settings). Everything in the directory is
logged under the artifact path ``model``: the weights, ``model.json``, the tokenizer and any traced format, so
``mlflow artifacts download -r RUN_ID -a model`` gives back a directory ``mm_ray.load_exported`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mm_ray.config.schema import TrackConfig
from mm_ray.track.mlflow_store import allow_file_store, import_mlflow, tracking_uri

MODEL_ARTIFACT = "model"
EXPORT_TAG = "mm_ray.export"
"""MLflow tag of an export's run: the model spec's name (preset or builder)."""


def experiment_id(client: Any, name: str) -> str:
    """The id of the MLflow experiment ``name``, created when there is none."""
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def log_export(directory: str | Path, track: TrackConfig, *, run_name: str) -> str:
    """Log the export ``directory`` as the ``model`` artifact of a new finished run; returns the run's id."""
    mlflow = import_mlflow()
    uri = tracking_uri(track.mlflow or "")
    allow_file_store(uri)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.create_run(experiment_id(client, track.experiment), run_name=run_name,
                            tags={EXPORT_TAG: run_name})  # fmt: skip
    client.log_artifacts(run.info.run_id, str(directory), artifact_path=MODEL_ARTIFACT)
    client.set_terminated(run.info.run_id)
    return run.info.run_id

"""A sweep in MLflow (no Ray): one parent run named after the sweep in ``track.experiment``, the trials' runs
nested under it by the same logger Tune calls, the parent kept when the sweep is continued, and the best trial
logged on it at the end. Also ``mm-ray export --mlflow``: the export directory as the ``model`` artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="tracking needs the [track] extra (mlflow-skinny)")

from mlflow.tracking import MlflowClient  # noqa: E402

from mm_ray.config.load import load_config  # noqa: E402
from mm_ray.track.artifacts import MODEL_ARTIFACT, log_export  # noqa: E402
from mm_ray.track.tune import NESTED_TAG, TrialMlflowLogger, finish_sweep_run, tune_callbacks  # noqa: E402


class Trial:
    """What Tune's logger callbacks read of a trial: its name and sampled config."""

    def __init__(self, name: str, config: dict) -> None:
        self.name, self.config, self.local_path = name, config, None

    def __str__(self) -> str:
        return self.name


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    return load_config(None, ["name=fusion-sweep", f"track.mlflow={store}", "track.experiment=team-runs",
                              "tune.num_samples=3"])  # fmt: skip


def test_trials_are_nested_under_the_sweeps_run_in_track_experiment(cfg) -> None:
    (logger,) = [c for c in tune_callbacks(cfg) if isinstance(c, TrialMlflowLogger)]
    logger.setup()
    for i in range(2):
        trial = Trial(f"trial_{i}", {"model.preset": "gated"})
        logger.log_trial_start(trial)
        logger.log_trial_result(1, trial, {"val_accuracy": 0.5 + i / 10, "training_iteration": 1})
        logger.log_trial_end(trial)
    client = MlflowClient(tracking_uri=Path(cfg.track.mlflow).resolve().as_uri())
    experiment = client.get_experiment_by_name("team-runs")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    parent = runs.pop("fusion-sweep")
    assert parent.data.params["tune.num_samples"] == "3"
    assert sorted(runs) == ["trial_0", "trial_1"]
    assert {run.data.tags[NESTED_TAG] for run in runs.values()} == {parent.info.run_id}
    assert client.get_experiment_by_name("fusion-sweep") is None  # not an experiment named after the sweep

    # Continued (``--resume``): the same parent; at the end the best trial is logged on it and it is finished.
    assert tune_callbacks(cfg)[-1].tags[NESTED_TAG] == parent.info.run_id
    assert finish_sweep_run(cfg, {"trial_id": "trial_1", "best": 0.6}) == parent.info.run_id
    done = client.get_run(parent.info.run_id)
    assert done.info.status == "FINISHED" and done.data.tags["best_trial"] == "trial_1"
    assert done.data.metrics["best_val_accuracy"] == pytest.approx(0.6)


def test_an_export_is_logged_as_a_model_artifact(cfg, tmp_path: Path) -> None:
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    (export_dir / "model.json").write_text("{}")
    (export_dir / "model.safetensors").write_bytes(b"weights")
    run_id = log_export(export_dir, cfg.track, run_name="export gated")
    client = MlflowClient(tracking_uri=Path(cfg.track.mlflow).resolve().as_uri())
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "team-runs"
    names = sorted(Path(f.path).name for f in client.list_artifacts(run_id, MODEL_ARTIFACT))
    assert names == ["model.json", "model.safetensors"]

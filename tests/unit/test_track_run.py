"""Run tracking without Ray: ``RunTracker`` logs a hand-made 2-epoch history to TensorBoard and an MLflow file
store; the values are read back with TensorBoard's ``EventAccumulator`` and ``MlflowClient`` and compared with
the history that was logged."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mm_ray.config.load import ConfigError, as_dict, load_config, persistable
from mm_ray.track.mlflow_store import tracking_uri
from mm_ray.track.run import RunTracker, view_commands
from mm_ray.train.outputs import plot_curves

SECRET = "wJalrXUtnFEMI-do-not-track"
OPTIONS = json.dumps({"secret_key": SECRET, "endpoint_override": "h:9"})


def _history() -> list[dict[str, Any]]:
    return [
        {
            "epoch": epoch,
            "step": 3 * epoch,
            "train_loss": 2.0 / epoch,
            "train_accuracy": 0.25 * epoch,
            "val_accuracy": 0.2 * epoch,
            "subset/image+audio/accuracy": 0.1 * epoch,
            "subset/text/accuracy": float("nan"),  # no text-only sample: NaN, not logged
            "worker_nodes": "abc,def",  # a string: not a metric
            "train_started_at": 1.7e9 + epoch,  # a wall-clock timestamp: not a curve
        }
        for epoch in (1, 2)
    ]


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> str:
    # The test's own reader needs MLflow 3's opt-in for file stores too (the tracker sets it for its URI).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return str(tmp_path / "mlruns")


def _cfg(tmp_path: Path, store: str, *more: str):
    return load_config(
        None,
        [
            f"output_dir={tmp_path}",
            "name=tracked",
            f"track.mlflow={store}",
            f"data.storage_options={OPTIONS}",
            *more,
        ],
    )


def _track(cfg, run_dir: Path, history) -> RunTracker:
    tracker = RunTracker.open(cfg, run_dir)
    for metrics in history:
        tracker.log_epoch(metrics)
    curves = plot_curves(history, run_dir / "curves.png")
    tracker.finish(
        history, artifacts={"curves.png": str(curves)}, best_checkpoint="/ckpt/epoch_2", best_epoch=2
    )
    return tracker


def test_a_run_is_logged_to_mlflow_and_tensorboard(tmp_path: Path, store: str) -> None:
    cfg = _cfg(tmp_path, store)
    history = _history()
    tracker = _track(cfg, tmp_path / "tracked", history)

    client = MlflowClient(tracking_uri=Path(store).resolve().as_uri())
    run = client.get_run(tracker.where["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert client.get_experiment(run.info.experiment_id).name == "mm-ray"  # track.experiment's default
    for key, mlflow_key in [
        ("train_loss", "train_loss"),
        ("val_accuracy", "val_accuracy"),
        ("subset/image+audio/accuracy", "subset/image_audio/accuracy"),  # MLflow rejects '+'
    ]:
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, mlflow_key))
        assert logged == [(row["epoch"], pytest.approx(row[key])) for row in history]
    for absent in ("subset/text/accuracy", "worker_nodes", "train_started_at"):
        assert absent not in run.data.metrics
    # Params: the whole config, flattened, as the run saved it -- the secret left out.
    params = run.data.params
    assert params["name"] == "tracked" and params["model.preset"] == cfg.model.preset
    assert float(params["train.lr"]) == cfg.train.lr
    assert json.loads(params["embed.pairs"]) == list(cfg.embed.pairs) and params["model.modalities"] == "null"
    assert params["data.storage_options.endpoint_override"] == "h:9"
    assert not any(SECRET in value for value in params.values())
    assert not any("secret_key" in key for key in params)
    assert run.data.tags["best_checkpoint"] == "/ckpt/epoch_2" and run.data.tags["best_epoch"] == "2"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["curves.png"]

    events = EventAccumulator(tracker.where["tensorboard"], size_guidance={"scalars": 0})
    events.Reload()
    for key, tag in [
        ("train_loss", "train_loss"),
        ("val_accuracy", "val_accuracy"),
        ("subset/image+audio/accuracy", "subset/image_audio/accuracy"),
    ]:
        assert [(e.step, e.value) for e in events.Scalars(tag)] == [
            (row["epoch"], pytest.approx(row[key])) for row in history
        ]
    tags = events.Tags()
    assert "worker_nodes" not in tags["scalars"] and "subset/text/accuracy" not in tags["scalars"]
    assert tags["images"] == ["curves"]
    assert {"config/text_summary", "best_checkpoint/text_summary"} <= set(tags["tensors"])
    assert view_commands(tracker.where)["mlflow"].startswith("mlflow ui --backend-store-uri file://")


def test_a_run_started_again_continues_its_mlflow_run(tmp_path: Path, store: str) -> None:
    cfg = _cfg(tmp_path, store, "track.tensorboard=false")
    history = _history()
    first = _track(cfg, tmp_path / "tracked", history[:1])
    # Resumed with more epochs: its history holds epoch 1 again, and one param differs.
    more = _cfg(tmp_path, store, "track.tensorboard=false", "train.epochs=12")
    again = _track(more, tmp_path / "tracked", history)
    assert again.where["mlflow_run_id"] == first.where["mlflow_run_id"] and "tensorboard" not in again.where
    client = MlflowClient(tracking_uri=Path(store).resolve().as_uri())
    run = client.get_run(again.where["mlflow_run_id"])
    assert run.data.params["train.epochs"] == str(cfg.train.epochs)  # MLflow keeps a param's first value
    assert run.data.tags["resumed_with.train.epochs"] == "12"
    logged = [(m.step, m.value) for m in client.get_metric_history(again.run_id or "", "val_accuracy")]
    assert sorted(logged) == [(1, pytest.approx(0.2)), (2, pytest.approx(0.4))]  # epoch 1 once


def test_mlflow_missing_is_an_error_naming_the_extra(tmp_path: Path, store: str, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` sees where it is not installed
    with pytest.raises(ConfigError, match=r"track\.mlflow.*mm-ray\[track\]"):
        RunTracker.open(_cfg(tmp_path, store), tmp_path / "tracked")


def test_tracking_uris_and_credentials(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert tracking_uri("mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert tracking_uri("file:./mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert tracking_uri("file:///srv/mlruns") == "file:///srv/mlruns"
    assert tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert tracking_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_PASSWORD"):
        tracking_uri("https://me:hunter2@mlflow.example")
    # A URI with a password is never saved or printed (config.yaml, sweep.yaml, `mm-ray config show`).
    cfg = load_config(None, ["track.mlflow=https://me:hunter2@mlflow.example/x"])
    assert persistable(as_dict(cfg))["track"]["mlflow"] == "https://mlflow.example/x"


def test_an_mlflow_server_is_opened_in_a_browser() -> None:
    where = {"tensorboard": "runs/x/tensorboard", "mlflow_uri": "http://mlflow:5000"}
    assert view_commands(where) == {
        "tensorboard": "tensorboard --logdir runs/x/tensorboard",
        "mlflow": "open http://mlflow:5000",
    }

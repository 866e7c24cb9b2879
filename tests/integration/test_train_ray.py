"""Ray Train end to end on a tiny preprocessed cache: 2 CPU workers, checkpoints, per-subset metrics, resume.

The cache is made with ``build_cache`` from the demo shards (train and val split), as ``mm-ray
preprocess`` would; the model is tiny so each epoch is a fraction of a second and the cost is Ray's start-up.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image
from ray_processes import ray_processes

from mm_ray.cli.main import main
from mm_ray.config.load import load_config
from mm_ray.data.build import build_cache
from mm_ray.train.checkpoint import load_checkpoint
from mm_ray.train.metrics import DEFAULT_REGISTRY
from mm_ray.train.ray_trainer import fit

SUBSETS = DEFAULT_REGISTRY.subsets()

pytestmark = pytest.mark.integration

CACHE = ("image.size=32", "audio.n_mels=16", "audio.duration_s=0.5", "text.max_length=16")
TINY_MODEL = ("model.width=8", "model.depth=1", "model.fusion_dim=8")


@pytest.fixture(scope="module")
def caches(demo_shards, tmp_path_factory) -> tuple[Path, Path]:
    shards, manifest = demo_shards
    out = tmp_path_factory.mktemp("train_cache")
    cfg = load_config(None, CACHE)
    train_specs = [str(shards / name) for name in manifest["shards"]["train"]]
    val_specs = [str(shards / name) for name in manifest["shards"]["val"]]
    train = build_cache(cfg, train_specs, str(out / "train"))
    # The val cache must share the train cache's tokenizer (token ids index the same embedding table).
    build_cache(cfg, val_specs, str(out / "val"), tokenizer_json=train.tokenizer_json)
    assert train.samples > 0
    return out / "train", out / "val"


def _config(caches: tuple[Path, Path], storage: Path, *overrides: str):
    train, val = caches
    return load_config(
        None,
        [
            *CACHE,
            *TINY_MODEL,
            "name=tiny",
            f"train.cache={train}",
            f"train.val_cache={val}",
            f"train.storage_path={storage}",
            "train.num_workers=2",
            "train.cpus_per_worker=0.5",
            "train.batch_size=8",
            "train.warmup_steps=2",
            "train.checkpoints_to_keep=2",
            *overrides,
        ],
    )


def _adam_steps(state: dict) -> set[int]:
    return {int(s["step"]) for s in state["optimizer"]["state"].values()}


def test_two_workers_train_checkpoint_and_resume(caches, tmp_path: Path) -> None:
    first = fit(_config(caches, tmp_path, "train.epochs=2"))
    assert first.epochs_run == 2
    assert [m["epoch"] for m in first.history] == [1, 2]
    for epoch in first.history:
        assert epoch["train_samples"] > 0 and epoch["val_samples"] > 0
        assert 0.0 <= epoch["subset/image+text+audio/accuracy"] <= 1.0
    assert set(first.subsets) == set(SUBSETS)
    assert all(r["samples"] == first.metrics["val_samples"] for r in first.subsets.values())
    state = load_checkpoint(first.checkpoint)
    assert state["epoch"] == 2
    steps_after_two = first.metrics["step"]
    # Every Adam moment has taken exactly one step per optimizer step (rank 0's count of its own steps).
    assert _adam_steps(state) == {steps_after_two} and steps_after_two > 0
    assert state["scheduler"]["last_epoch"] == steps_after_two

    second = fit(_config(caches, tmp_path, "train.epochs=3"))
    # Only epoch 3 ran: the workers resumed from the epoch-2 checkpoint instead of starting over, and the
    # history of epochs 1-2 came back from that checkpoint unchanged.
    assert [m["epoch"] for m in second.history] == [1, 2, 3]
    assert second.history[:2] == first.history
    assert [m["resumed_from"] for m in second.history] == [0, 0, 2]
    assert second.epochs_run == 3
    resumed = load_checkpoint(second.checkpoint)
    assert resumed["epoch"] == 3
    # The optimizer's step counter continued from the restored state (a fresh optimizer would restart at 0).
    per_epoch = steps_after_two // 2
    assert _adam_steps(resumed) == {steps_after_two + per_epoch}
    assert second.metrics["step"] == steps_after_two + per_epoch


class RandomKill(threading.Thread):
    """SIGKILLs one Train worker (``ray::RayTrainWorker``, rank chosen at random) ``delay_s`` after the first one
    appears: from outside, at any point of the run, before or after a checkpoint is registered."""

    def __init__(self, delay_s: float, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.delay_s, self.rng = delay_s, rng
        self.fit_returned = threading.Event()
        self.killed: int | None = None
        self.first_seen: float | None = None

    def run(self) -> None:
        while not self.fit_returned.is_set():
            if ray_processes("RayTrainWorker"):
                self.first_seen = time.monotonic()
                break
            time.sleep(0.05)
        if self.fit_returned.wait(self.delay_s):
            return
        workers = ray_processes("RayTrainWorker")
        if workers and not self.fit_returned.is_set():
            victim = self.rng.choice(workers)
            victim.send_signal(signal.SIGKILL)
            self.killed = victim.pid


def _fit_watched(cfg, kill: RandomKill):
    kill.start()
    try:
        return fit(cfg)
    finally:
        kill.fit_returned.set()
        kill.join()


@pytest.mark.slow  # an uninterrupted run, and one whose worker group is started twice: ~2.5 minutes
def test_a_worker_sigkilled_at_a_random_point_restarts_and_ends_as_the_uninterrupted_run(
    caches, tmp_path: Path
) -> None:
    # The uninterrupted run also measures how long the workers live: the kill lands anywhere in that span.
    timer = RandomKill(delay_s=3600, rng=random.Random(0))
    plain = _fit_watched(_config(caches, tmp_path / "plain", "train.epochs=4"), timer)
    assert timer.first_seen is not None
    span = time.monotonic() - timer.first_seen
    seed = int(os.environ.get("MM_RAY_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    kill = RandomKill(delay_s=rng.uniform(0.0, 0.8 * span), rng=rng)
    crashed = _fit_watched(
        _config(caches, tmp_path / "crashed", "train.epochs=4", "train.max_failures=3"), kill
    )
    where = f"(MM_RAY_KILL_SEED={seed}: a worker killed {kill.delay_s:.1f} s into a {span:.1f} s span)"
    assert kill.killed is not None, f"the run ended before the kill {where}"
    # Every epoch recorded once, in order: none skipped, none counted twice.
    assert [m["epoch"] for m in crashed.history] == [1, 2, 3, 4], where
    resumed = [m["resumed_from"] for m in crashed.history]
    assert resumed == sorted(resumed), where
    assert all(m["resumed_from"] < m["epoch"] for m in crashed.history), where
    # Whatever the kill cut short died with the process: the optimizer went on from the last registered
    # checkpoint (or from scratch), so the run took exactly the uninterrupted run's steps.
    assert crashed.metrics["step"] == plain.metrics["step"] > 0, where
    assert _adam_steps(load_checkpoint(crashed.checkpoint)) == {plain.metrics["step"]}, where
    # Accuracy within noise of the uninterrupted run: two binomial standard errors of a difference of two
    # accuracies on n validation samples (at its widest, p = 0.5).
    n = plain.metrics["val_samples"]
    noise = 2 * (2 * 0.25 / n) ** 0.5
    assert abs(crashed.metrics["val_accuracy"] - plain.metrics["val_accuracy"]) <= noise, where


@pytest.mark.slow  # ~1 minute; the restart test beside it covers the drill
def test_a_worker_crash_without_max_failures_fails_the_run(caches, tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"(?i)fail|died|exit"):
        fit(_config(caches, tmp_path, "train.epochs=2", "train.max_failures=0", "train.fail_at_epoch=2"))


def test_cli_train_prints_the_subset_table(caches, tmp_path: Path, capsys) -> None:
    train, val = caches
    code = main(
        [
            "train",
            *CACHE,
            *TINY_MODEL,
            "name=cli",
            f"train.cache={train}",
            f"train.val_cache={val}",
            f"train.storage_path={tmp_path}",
            f"output_dir={tmp_path}",
            "train.epochs=1",
            "train.num_workers=1",
            "train.batch_size=16",
            # Tracking: TensorBoard is on by default; MLflow into a local file store given as a relative URI.
            f"track.mlflow=file:{os.path.relpath(tmp_path / 'mlruns')}",
            "--json",
            str(tmp_path / "summary.json"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    # One progress line per epoch as it ends, then the summary and the subset table.
    assert re.search(
        r"^epoch 1/1  train_loss \d\.\d{4}  train_accuracy .* val_accuracy \d", out, re.MULTILINE
    ), out
    assert "image+text+audio" in out and "accuracy" in out
    printed = json.loads((tmp_path / "summary.json").read_text())
    assert printed["epochs_run"] == 1
    # The run directory <output_dir>/<name> holds the run's outputs; the CLI prints where they are.
    run_dir = tmp_path / "cli"
    assert printed["outputs"]["curves_png"] == str(run_dir / "curves.png")
    assert str(run_dir / "metrics.csv") in out
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["epoch"] == 1 and rows[0]["val_samples"] > 0
    with open(run_dir / "metrics.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 1
    assert json.loads((run_dir / "summary.json").read_text())["history"] == rows
    assert Image.open(run_dir / "curves.png").width > 400
    _assert_tracked(printed, out, mlruns=tmp_path / "mlruns", run_dir=run_dir)


def _assert_tracked(printed: dict, out: str, *, mlruns: Path, run_dir: Path) -> None:
    """The run's history, as ``mm-ray train --json`` returned it, read back from MLflow and TensorBoard."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracking = printed["tracking"]
    assert tracking["tensorboard"] == str(run_dir / "tensorboard")
    assert f"tensorboard --logdir {run_dir / 'tensorboard'}" in out
    assert f"mlflow ui --backend-store-uri {mlruns.resolve().as_uri()}" in out
    history = printed["history"]
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in for reading a file store
    client = MlflowClient(tracking_uri=mlruns.resolve().as_uri())
    run = client.get_run(tracking["mlflow_run_id"])
    assert run.info.run_name == "cli" and run.info.status == "FINISHED"
    assert (
        run.data.params["train.num_workers"] == "1" and run.data.params["model.preset"] == printed["preset"]
    )
    for key in ("train_loss", "train_accuracy", "val_accuracy", "val_loss"):
        logged = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in logged] == [(r["epoch"], pytest.approx(r[key])) for r in history]
    # Logged live, as the epoch ended, not after the run: before the curves were drawn.
    first = client.get_metric_history(run.info.run_id, "val_accuracy")[0]
    assert first.timestamp / 1000 < (run_dir / "curves.png").stat().st_mtime
    subset = client.get_metric_history(run.info.run_id, "subset/image_text_audio/accuracy")
    assert [m.value for m in subset] == [
        pytest.approx(r["subset/image+text+audio/accuracy"]) for r in history
    ]
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == [
        "config.yaml",
        "curves.png",
        "summary.json",
    ]
    assert run.data.tags["best_checkpoint"] == printed["best_checkpoint"]
    assert Path(printed["best_checkpoint"]).is_dir()
    events = EventAccumulator(tracking["tensorboard"])
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("val_accuracy")] == [
        (r["epoch"], pytest.approx(r["val_accuracy"])) for r in history
    ]
    assert "curves" in events.Tags()["images"]

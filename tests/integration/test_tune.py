"""``mm-ray tune`` end to end on local Ray (2 CPUs): real Tune sweeps of real Ray Train runs on a tiny cache.

1. ``mm-ray tune``: 4 trials x 2 epochs (random search, ASHA) -> leaderboard, trials.csv/json, plots and a
   best config that ``mm-ray train --config best_config.yaml`` runs as it is; every CPU given back.
2. A sweep (Optuna TPE, a conditional space) interrupted by SIGINT -- Ctrl-C -- after its first trial
   finished, then ``mm-ray tune --resume``: the finished trial is not run again, the rest finish.
3. The same with the sweep's driver process killed outright (SIGKILL: no handler runs, nothing is saved on
   the way out), as an out-of-memory kill or a lost head-node shell would.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import ray.tune
import yaml
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mm_ray.cli.main import main
from mm_ray.config.load import load_config
from mm_ray.data.build import build_cache
from mm_ray.data.cache import Cache
from mm_ray.train.checkpoint import load_checkpoint
from mm_ray.tune.sweep import plan_sweep, run_sweep

pytestmark = pytest.mark.integration

CACHE = ("image.size=32", "audio.n_mels=16", "audio.duration_s=0.5", "text.max_length=16")
TINY = ("model.width=8", "model.depth=1", "model.fusion_dim=8", "train.batch_size=8", "train.warmup_steps=2")
SPACE = {
    "model.preset": {"choice": ["late_concat", "gated", "low_rank_tensor"]},
    "model.rank": {"randint": [2, 4], "when": {"model.preset": "low_rank_tensor"}},
    "train.lr": {"loguniform": [1.0e-3, 1.0e-2]},
}


@pytest.fixture(scope="module")
def caches(demo_shards, tmp_path_factory) -> tuple[Path, Path]:
    shards, manifest = demo_shards
    out = tmp_path_factory.mktemp("tune_cache")
    cfg = load_config(None, CACHE)
    train = build_cache(cfg, [str(shards / n) for n in manifest["shards"]["train"]], str(out / "train"))
    val_specs = [str(shards / n) for n in manifest["shards"]["val"]]
    build_cache(cfg, val_specs, str(out / "val"), tokenizer_json=train.tokenizer_json)
    return out / "train", out / "val"


def _overrides(caches: tuple[Path, Path], out: Path, name: str, *more: str) -> list[str]:
    space = out / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    return [
        *CACHE,
        *TINY,
        f"name={name}",
        f"output_dir={out}",
        f"train.cache={caches[0]}",
        f"train.val_cache={caches[1]}",
        "train.epochs=2",
        "train.num_workers=1",
        f"tune.space={space}",
        *more,
    ]


def test_a_four_trial_sweep_exports_a_runnable_best_config(caches, tmp_path: Path, capsys) -> None:
    # As in the demo's sweep: the caches are in memory, so Ray Data keeps only half a CPU and two trials of
    # 0.25 + 0.5 CPU run side by side. Nothing may need a whole free CPU once a trial's workers hold theirs (an
    # in-memory cache put into the object store by the Train controller waited for one for ever).
    overrides = _overrides(
        caches, tmp_path, "sweep", "tune.num_samples=4", "train.cpus_per_worker=0.5", "tune.data_cpus=0.5"
    )
    assert main(["tune", *overrides, "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    records = summary["records"]
    assert summary["trials"] == 4 and summary["done"] + summary["stopped"] == 4 and not summary["interrupted"]
    assert summary["max_concurrent_trials"] == 2  # 2 CPUs: 0.5 for Ray Data, 0.25 + 0.5 per trial
    # ASHA's savings are counted against 4 trials x 2 epochs.
    assert summary["trial_epochs"] == sum(r["epochs_run"] for r in records)
    assert summary["trial_epochs_without_stopping"] == 8
    for r in records:
        # Tune saw every epoch as it happened (TuneReportCallback), not only the end.
        assert [h["epoch"] for h in r["history"]] == list(range(1, r["epochs_run"] + 1))
        assert ("model.rank" in r["params"]) == (r["preset"] == "low_rank_tensor")
        # Each trial is a Ray Train run named after its trial id, with checkpoints in the experiment.
        assert r["checkpoint"].startswith(f"{summary['experiment']}/train/{r['trial_id']}/")
    # Trials read the cache: nothing was decoded but what preprocessing decoded once.
    assert summary["decoded"] == {
        "trials": 0,
        "this_run": 0,
        "train_cache": Cache.open(str(caches[0])).manifest.samples_read,
        "val_cache": Cache.open(str(caches[1])).manifest.samples_read,
    }
    # The leaderboard: a header, a rule and one row per trial, best first.
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert "best val_accuracy" in table[0] and len(table) == 1 + 4
    assert records[0]["trial_id"] in table[1]
    run_dir = tmp_path / "sweep"
    with open(run_dir / "trials.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert all((run_dir / name).stat().st_size > 0 for name in ("best_by_preset.png", "trial_curves.png"))
    # Stopped and finished trials gave their workers' CPUs back (mm_ray.tune.cleanup).
    assert ray.available_resources().get("CPU") == 2.0
    # TensorBoard (track.tensorboard, on by default): Tune's logger wrote every trial's epochs into its
    # directory of the experiment, and the CLI said where to look.
    assert summary["tracking"] == {"tensorboard": summary["experiment"]}
    assert f"tensorboard --logdir {summary['experiment']}" in out
    for r in records:
        events = EventAccumulator(f"{summary['experiment']}/trial_{r['trial_id']}")
        events.Reload()
        assert [(e.step, e.value) for e in events.Scalars("ray/tune/val_accuracy")] == [
            (h["epoch"], pytest.approx(h["val_accuracy"])) for h in r["history"]
        ]

    best = yaml.safe_load((run_dir / "best_config.yaml").read_text())
    assert best["model"]["preset"] == records[0]["preset"]
    assert (
        main(["train", "--config", str(run_dir / "best_config.yaml"), "--json", str(tmp_path / "t.json")])
        == 0
    )
    trained = json.loads((tmp_path / "t.json").read_text())
    assert trained["epochs_run"] == 2 and trained["run_path"].endswith("sweep-best")


@pytest.mark.slow  # a two-trial sweep, ~2 minutes on 2 busy cores
def test_a_sweep_logs_one_mlflow_run_per_trial(caches, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in, for this test's own reader
    store = tmp_path / "mlruns"
    overrides = _overrides(
        caches,
        tmp_path,
        "tracked",
        "tune.num_samples=2",
        "tune.scheduler=fifo",
        f"track.mlflow={store}",
        "track.tensorboard=false",
    )
    assert main(["tune", *overrides, "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["done"] == 2
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name("mm-ray")  # track.experiment (its default)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in runs if run.info.run_name == "tracked"]  # the sweep's own run
    runs = [run for run in runs if run is not parent]
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in [parent, *runs])
    assert {run.data.tags["mlflow.parentRunId"] for run in runs} == {parent.info.run_id}
    assert parent.data.tags["best_trial"] == summary["best"]["trial_id"]
    for record in summary["records"]:
        (run,) = [run for run in runs if record["trial_id"] in run.info.run_name]
        assert run.data.params["model.preset"] == record["preset"]
        assert float(run.data.params["train.lr"]) == pytest.approx(record["params"]["train.lr"])
        for key, name in [("val_accuracy", "val_accuracy"), ("train_loss", "train_loss")]:
            logged = client.get_metric_history(run.info.run_id, name)
            # step: Tune's report count, one report per epoch.
            assert [(m.step, m.value) for m in logged] == [
                (h["epoch"], pytest.approx(h[key])) for h in record["history"]
            ]
        subset = client.get_metric_history(run.info.run_id, "subset/image_text/accuracy")
        assert [m.value for m in subset] == [
            pytest.approx(h["subset/image+text/accuracy"]) for h in record["history"]
        ]
        # track.tensorboard=false: Tune's default TensorBoard logger is off too.
        assert not list((Path(summary["experiment"]) / f"trial_{record['trial_id']}").glob("events.out.*"))


class InterruptAfter(ray.tune.Callback):
    """Sends this process SIGINT -- what Ctrl-C does -- once ``trials`` trials have completed."""

    def __init__(self, trials: int) -> None:
        self.trials, self.completed = trials, 0

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.completed += 1
        if self.completed == self.trials:
            os.kill(os.getpid(), signal.SIGINT)

    def __getstate__(self) -> dict:
        # Tune saves the run's callbacks with the experiment: the resumed sweep gets a copy that never fires.
        return {"trials": 0, "completed": 0}


@pytest.mark.slow  # two sweeps, ~2 minutes on 2 cores
def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(caches, tmp_path: Path) -> None:
    overrides = _overrides(caches, tmp_path, "resumable", "tune.num_samples=2", "tune.searcher=optuna")
    sweep = plan_sweep(load_config(None, overrides))
    first = run_sweep(sweep, callbacks=[InterruptAfter(1)])
    assert first["interrupted"]
    # The trial that completed, and possibly the next one if it trained its last epoch before the signal.
    finished = {r.trial_id: r for r in first["records"] if r.status in ("done", "stopped")}
    assert 1 <= len(finished) <= 2
    experiment = Path(first["experiment"])
    before = {t: _trial_files(experiment, t) for t in finished}

    assert main(["tune", "--resume", str(sweep.results_dir), "--json", str(tmp_path / "r.json")]) == 0
    resumed = json.loads((tmp_path / "r.json").read_text())
    assert resumed["trials"] == 2 and resumed["done"] + resumed["stopped"] == 2 and not resumed["interrupted"]
    by_id = {r["trial_id"]: r for r in resumed["records"]}
    assert set(finished) <= set(by_id)
    for trial_id, record in finished.items():
        # No epoch trained again: the same results, no new result rows in Tune, no new or rewritten checkpoint.
        assert by_id[trial_id]["history"] == record.to_dict()["history"]  # both as the JSON holds them
        assert _trial_files(experiment, trial_id) == before[trial_id]
    for r in resumed["records"]:
        assert r["epochs_run"] >= 1 and ("model.rank" in r["params"]) == (r["preset"] == "low_rank_tensor")


def _trial_files(experiment: Path, trial_id: str) -> dict[str, tuple]:
    """What a trial leaves: the results Tune recorded (by content: Tune copies its files to storage again when
    it saves the experiment) and the checkpoints of its Train run (by size and modification time)."""
    tune_dir, train_dir = experiment / f"trial_{trial_id}", experiment / "train" / trial_id
    files = {
        name: (hashlib.sha256((tune_dir / name).read_bytes()).hexdigest(),)
        for name in ("result.json", "progress.csv")
    }
    for path in sorted(train_dir.glob("checkpoint_*/**/*")):
        if path.is_file():
            files[str(path.relative_to(experiment))] = (path.stat().st_size, path.stat().st_mtime_ns)
    assert any(name.startswith("train/") for name in files)  # the trial's Train run is there to compare
    return files


@pytest.mark.slow  # a sweep in a child process, killed, then resumed: ~3 minutes on 2 cores
def test_a_sweep_whose_driver_was_killed_resumes_without_rerunning_finished_trials(
    caches, tmp_path: Path
) -> None:
    # The child joins this module's Ray as a second driver; SIGKILL leaves Ray to reap its trials.
    address = ray.get_runtime_context().gcs_address
    overrides = _overrides(caches, tmp_path, "killed", "tune.num_samples=2", f"ray.address={address}")
    sweep = plan_sweep(load_config(None, overrides))
    child = subprocess.Popen(
        [sys.executable, "-m", "mm_ray.cli.main", "tune", *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        finished = _wait_for_a_saved_finished_trial(Path(sweep.experiment_path), child, timeout_s=600)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    experiment = Path(sweep.experiment_path)
    before = {t: _trial_files(experiment, t) for t in finished}

    assert main(["tune", "--resume", str(sweep.results_dir), "--json", str(tmp_path / "r.json")]) == 0
    resumed = json.loads((tmp_path / "r.json").read_text())
    assert resumed["trials"] == 2 and resumed["done"] + resumed["stopped"] == 2 and not resumed["interrupted"]
    by_id = {r["trial_id"]: r for r in resumed["records"]}
    for trial_id in finished:
        # Not trained again: no new result rows, no new or rewritten checkpoint.
        assert _trial_files(experiment, trial_id) == before[trial_id]
        assert by_id[trial_id]["epochs_run"] == 2
    # Every trial, the interrupted ones too: each epoch trained and recorded once, none skipped. The Train run's
    # own last checkpoint says what the model went through: its history, and its optimizer's step count, which
    # is the finished trials' steps per epoch times the epochs (an epoch trained twice into it would add steps).
    per_epoch = load_checkpoint(by_id[next(iter(finished))]["checkpoint"])["metrics"]["step"] // 2
    for r in resumed["records"]:
        epochs = list(range(1, r["epochs_run"] + 1))
        assert r["epochs_run"] >= 1 and [h["epoch"] for h in r["history"]] == epochs, r["trial_id"]
        state = load_checkpoint(r["checkpoint"])
        assert state["epoch"] == r["epochs_run"] and [h["epoch"] for h in state["history"]] == epochs
        assert state["metrics"]["step"] == per_epoch * r["epochs_run"] > 0, r["trial_id"]


def _wait_for_a_saved_finished_trial(experiment: Path, child: subprocess.Popen, timeout_s: float) -> set[str]:
    """Trial ids that Tune's saved experiment state already marks finished (TERMINATED), once there is one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert child.poll() is None, "the sweep ended before it could be killed"
        finished = set()
        for state in experiment.glob("experiment_state-*.json"):
            try:
                trials = json.loads(state.read_text())["trial_data"]
            except (OSError, ValueError, KeyError):
                continue  # being written
            for trial_json, _runtime in trials:
                trial = json.loads(trial_json)
                if trial.get("status") == "TERMINATED":
                    finished.add(trial["trial_id"])
        if finished:
            return finished
        time.sleep(0.5)
    raise AssertionError(f"no trial finished within {timeout_s} s")

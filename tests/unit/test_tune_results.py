"""Sweep results without Ray: trial records, ranking, the leaderboard, trials.csv/json, the best config, plots."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mm_ray.config.load import as_dict, load_config
from mm_ray.records import RecordError
from mm_ray.tune import plots
from mm_ray.tune.results import (
    TrialRecord,
    best_config,
    leaderboard,
    rank,
    read_trials,
    trial_epochs,
    trial_record,
    write_trials,
)
from mm_ray.tune.space import parse_space

SPACE = parse_space(
    {
        "model.preset": {"choice": ["late_concat", "gated", "low_rank_tensor"]},
        "train.lr": {"loguniform": [1e-4, 1e-2]},
        "model.rank": {"randint": [2, 8], "when": {"model.preset": "low_rank_tensor"}},
    }
)


def _rows(*accuracies: float, start: int = 1) -> list[dict]:
    # What Tune's metrics dataframe holds: our metrics plus Tune's bookkeeping columns.
    return [
        {"epoch": start + i, "val_accuracy": a, "val_loss": 1 - a, "training_iteration": i + 1, "done": False}
        for i, a in enumerate(accuracies)
    ]


def _record(trial_id: str, config: dict, rows: list[dict], *, done: bool = True, error: str | None = None):
    return trial_record(
        trial_id,
        config,
        rows,
        space=SPACE,
        metric="val_accuracy",
        mode="max",
        max_epochs=3,
        done=done,
        error=error,
        base_preset="late_concat",
    )


@pytest.fixture
def records() -> list[TrialRecord]:
    return [
        _record("t0", {"model.preset": "gated", "train.lr": 1e-3, "model.rank": None}, _rows(0.4, 0.6, 0.5)),
        _record("t1", {"model.preset": "low_rank_tensor", "train.lr": 2e-3, "model.rank": 4}, _rows(0.3)),
        _record(
            "t2", {"model.preset": "late_concat", "train.lr": 5e-3, "model.rank": None}, _rows(0.7, 0.8)[:1]
        ),
        _record("t3", {"model.preset": "gated", "train.lr": 1e-2}, [], done=False, error="OOM\nmore"),
        _record("t4", {"model.preset": "late_concat", "train.lr": 1e-4}, _rows(0.2, 0.3), done=False),
    ]


def test_records_hold_best_epoch_and_status(records: list[TrialRecord]) -> None:
    t0, t1, _, t3, t4 = records
    assert (t0.best, t0.best_epoch, t0.epochs_run, t0.status) == (0.6, 2, 3, "done")
    assert t1.status == "stopped" and t1.params["model.rank"] == 4  # ASHA stopped it after 1 of 3
    assert t3.status == "error" and t3.best is None and t3.epochs_run == 0
    assert t4.status == "unfinished"  # the sweep was interrupted while it ran
    # Interrupted after its last epoch, before Tune saw it end: it has trained all it will.
    assert _record("t5", {"model.preset": "gated"}, _rows(0.1, 0.2, 0.3), done=False).status == "done"
    assert "model.rank" not in t0.params  # inactive conditional
    # Tune's bookkeeping is not part of the history.
    assert t0.history[0] == {"epoch": 1, "val_accuracy": 0.4, "val_loss": pytest.approx(0.6)}


def test_a_resumed_trial_keeps_one_row_per_epoch() -> None:
    # Epoch 2 reported before an interruption and again after the resume: the later report wins.
    rows = [*_rows(0.4, 0.5), *_rows(0.55, 0.6, start=2)]
    record = _record("t", {"model.preset": "gated", "train.lr": 1e-3}, rows)
    assert [r["epoch"] for r in record.history] == [1, 2, 3]
    assert record.history[1]["val_accuracy"] == 0.55 and record.best == 0.6


def test_rank_and_leaderboard(records: list[TrialRecord]) -> None:
    ranked = rank(records, "max")
    assert [r.trial_id for r in ranked] == ["t2", "t0", "t1", "t4", "t3"]  # no value last
    assert [r.trial_id for r in rank(records, "min")][:3] == ["t1", "t4", "t0"]  # a tie: by trial id
    headers, rows = leaderboard(ranked, SPACE, "val_accuracy")
    assert headers[:5] == ["trial", "preset", "family", "lr", "rank"]
    assert rows[0][:3] == ["t2", "late_concat", "concat"]
    assert rows[0][4] == "-" and rows[2][4] == "4"  # rank only where the preset has one
    assert rows[0][-4:] == ["0.7000", 1, 1, "stopped"]
    assert rows[-1][-4:] == ["-", "-", 0, "error"]


def test_trials_csv_and_json(records: list[TrialRecord], tmp_path: Path) -> None:
    ranked = rank(records, "max")
    paths = write_trials(ranked, tmp_path, SPACE)
    with open(paths["trials_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial_id"] for r in rows] == ["t2", "t0", "t1", "t4", "t3"]
    assert rows[2]["model.rank"] == "4" and rows[0]["model.rank"] == "" and rows[4]["best"] == ""
    assert set(rows[0]) >= {"status", "preset", "train.lr", "best", "best_epoch", "epochs_run"}
    saved = json.loads(Path(paths["trials_json"]).read_text())
    assert saved[1]["history"][1]["val_accuracy"] == 0.6 and saved[4]["error"] == "OOM\nmore"
    assert read_trials(paths["trials_json"]) == ranked  # the one reader reads what the one writer wrote


def test_a_trial_record_with_a_field_the_reader_does_not_know_is_refused_by_name(
    records: list[TrialRecord], tmp_path: Path
) -> None:
    saved = records[0].to_dict()
    assert TrialRecord.from_dict(saved) == records[0]
    with pytest.raises(RecordError, match=r"trial record 't0': unknown field\(s\) \['gpu_hours'\]"):
        TrialRecord.from_dict({**saved, "gpu_hours": 2})
    with pytest.raises(RecordError, match=r"missing field\(s\) \['epochs_run'\]"):
        TrialRecord.from_dict({k: v for k, v in saved.items() if k != "epochs_run"})
    with pytest.raises(RecordError, match="status 'paused' is not one of"):
        TrialRecord.from_dict({**saved, "status": "paused"})
    (tmp_path / "trials.json").write_text(json.dumps({"t0": saved}))
    with pytest.raises(RecordError, match="expected a list of trial records"):
        read_trials(tmp_path / "trials.json")


def test_best_config_is_a_full_runnable_config(records: list[TrialRecord], tmp_path: Path) -> None:
    base = load_config(None, ["name=sweep", "train.cache=/data/cache", "train.storage_path=/x/train"])
    best = best_config(rank(records, "max"), base, SPACE)
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(as_dict(best)))
    cfg = load_config(path)  # what `mm-ray train --config best.yaml` does first
    assert cfg.name == "sweep-best" and cfg.model.preset == "late_concat" and cfg.train.lr == 5e-3
    assert cfg.train.cache == "/data/cache" and cfg.train.storage_path is None
    assert best_config([], base, SPACE) is None


def test_plots(records: list[TrialRecord], tmp_path: Path) -> None:
    ranked = rank(records, "max")
    best = plots.plot_best_by_preset(ranked, tmp_path / "best.png", metric="val_accuracy", mode="max")
    curves = plots.plot_trial_curves(ranked, tmp_path / "curves.png", metric="val_accuracy", max_epochs=3)
    assert Image.open(best).width > 300 and Image.open(curves).width > 300
    # Nothing scored yet (a sweep interrupted in its first epoch) still draws.
    empty = [dataclasses.replace(r, best=None, history=()) for r in ranked]
    assert plots.plot_best_by_preset(empty, tmp_path / "e.png", metric="val_accuracy", mode="max").is_file()


def test_trial_epochs_compares_with_running_every_trial_to_the_end(records: list[TrialRecord]) -> None:
    spent = sum(r.epochs_run for r in records)
    assert trial_epochs(records, trials=len(records), max_epochs=4) == {
        "trial_epochs": spent,
        "trial_epochs_without_stopping": 4 * len(records),
        "trial_epochs_fraction": round(spent / (4 * len(records)), 3),
    }
    # Trials Tune never started (an interrupted sweep) count in the budget, not in what was spent.
    assert trial_epochs(records, trials=10, max_epochs=4)["trial_epochs_without_stopping"] == 40

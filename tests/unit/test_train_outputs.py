"""Run outputs (metrics.jsonl/csv, config.yaml, summary.json, curves.png) from a hand-made 3-epoch history."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from mm_ray.config.load import as_dict, load_config
from mm_ray.train.metrics import DEFAULT_REGISTRY
from mm_ray.train.outputs import json_safe, metric_columns, plot_curves, write_run_outputs

SUBSETS = DEFAULT_REGISTRY.subsets()

TRAIN_KEYS = [f"train_{k}" for k in ("loss", "accuracy", "samples", "steps", "seconds", "samples_per_s")]
VAL_KEYS = ["val_loss", "val_accuracy", "val_samples"]
SUBSET_KEYS = sorted(f"subset/{s}/{m}" for s in SUBSETS for m in ("accuracy", "loss", "samples"))


def _epoch(epoch: int, *, val: bool = True) -> dict[str, Any]:
    """One epoch's metrics with the keys the Ray Train adapter reports, in its order."""
    row: dict[str, Any] = {
        "epoch": epoch,
        "step": 3 * epoch,
        "resumed_from": 0 if epoch < 3 else 2,
        "train_loss": 2.0 / epoch,
        "train_accuracy": 0.2 * epoch,
        "train_samples": 48,
        "train_steps": 3,
        "train_seconds": 0.25 + epoch,
        "train_samples_per_s": 48 / (0.25 + epoch),
    }
    if val:
        row.update({"val_loss": 2.5 / epoch, "val_accuracy": 0.15 * epoch, "val_samples": 24})
        for i, subset in enumerate(SUBSETS):
            row[f"subset/{subset}/accuracy"] = 0.1 * epoch + 0.01 * i
            row[f"subset/{subset}/loss"] = 2.0 / epoch + 0.1 * i
            row[f"subset/{subset}/samples"] = 24
    return row


@pytest.fixture
def history() -> list[dict[str, Any]]:
    rows = [_epoch(e) for e in (1, 2, 3)]
    # What an empty evaluation yields (SubsetMetrics.result): NaN, which strict JSON cannot hold.
    rows[0]["subset/audio/accuracy"] = float("nan")
    rows[0]["subset/audio/loss"] = float("nan")
    return rows


def _summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    last = history[-1]
    return {
        "run_path": "storage/run-a",
        "checkpoint": "storage/run-a/checkpoint_000002",
        "epochs_run": len(history),
        "num_classes": 4,
        "metrics": {k: v for k, v in last.items() if not k.startswith("subset/")} | {"val_loss": math.nan},
        "subsets": {"audio": {"accuracy": math.nan, "loss": math.inf, "samples": 0}},
        "history": history,
    }


def _config() -> dict[str, Any]:
    return as_dict(load_config(None, ["name=run-a", "train.epochs=3", "train.lr_by_modality={text: 0.0001}"]))


@pytest.fixture
def outputs(tmp_path: Path, history) -> dict[str, str]:
    return write_run_outputs(tmp_path / "runs" / "run-a", config=_config(), summary=_summary(history))


def test_every_file_is_written_into_the_created_run_dir(outputs, tmp_path: Path) -> None:
    assert set(outputs) == {"metrics_jsonl", "metrics_csv", "config_yaml", "summary_json", "curves_png"}
    run_dir = tmp_path / "runs" / "run-a"
    assert {Path(p).name for p in outputs.values()} == {p.name for p in run_dir.iterdir()}
    assert all(Path(p).parent == run_dir and Path(p).stat().st_size > 0 for p in outputs.values())


def test_metrics_jsonl_round_trips_with_nan_as_null(outputs, history) -> None:
    lines = Path(outputs["metrics_jsonl"]).read_text().splitlines()
    rows = [json.loads(line, parse_constant=_reject) for line in lines]
    assert len(rows) == 3
    assert rows[0]["subset/audio/accuracy"] is None
    expected = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in history
    ]
    assert rows == expected
    assert list(rows[1]) == list(history[1])  # key order kept


def test_metrics_csv_has_one_row_per_epoch_in_column_order(outputs, history) -> None:
    with open(outputs["metrics_csv"], newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["epoch", "step", "resumed_from", *TRAIN_KEYS, *VAL_KEYS, *SUBSET_KEYS]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["train_samples_per_s"]) == history[2]["train_samples_per_s"]  # full precision
    assert float(rows[1]["subset/image+text/accuracy"]) == history[1]["subset/image+text/accuracy"]
    assert rows[0]["subset/audio/accuracy"] == ""  # NaN: an empty cell, not the string "nan"


def test_csv_columns_are_the_union_when_epochs_differ(tmp_path: Path) -> None:
    # A run that gained a val cache on resume: epoch 1 has no val metrics, epoch 2 does.
    rows = [_epoch(1, val=False), _epoch(2)]
    assert metric_columns(rows) == ["epoch", "step", "resumed_from", *TRAIN_KEYS, *VAL_KEYS, *SUBSET_KEYS]
    paths = write_run_outputs(tmp_path, config={}, summary={"history": rows})
    with open(paths["metrics_csv"], newline="") as f:
        first, second = csv.DictReader(f)
    assert first["val_accuracy"] == "" and float(second["val_accuracy"]) == rows[1]["val_accuracy"]


def test_config_yaml_loads_back_equal(outputs) -> None:
    config = _config()
    loaded = yaml.safe_load(Path(outputs["config_yaml"]).read_text())
    assert loaded == config
    assert list(loaded) == list(config)  # the schema's order, not sorted
    assert loaded["train"]["epochs"] == 3 and loaded["train"]["lr_by_modality"] == {"text": 0.0001}


def test_summary_json_is_strict_json(outputs, history) -> None:
    summary = json.loads(Path(outputs["summary_json"]).read_text(), parse_constant=_reject)
    assert summary["metrics"]["val_loss"] is None
    assert summary["subsets"]["audio"] == {"accuracy": None, "loss": None, "samples": 0}
    assert summary["epochs_run"] == 3 and summary["checkpoint"] == "storage/run-a/checkpoint_000002"
    assert [r["epoch"] for r in summary["history"]] == [1, 2, 3]
    assert summary["history"][2] == history[2]


def test_json_safe_converts_numpy_tuples_and_non_finite_floats() -> None:
    value = {1: (np.float32(0.5), np.int64(7), np.bool_(True)), "x": [math.inf, -math.inf, Path("a/b")]}
    assert json_safe(value) == {"1": [0.5, 7, True], "x": [None, None, "a/b"]}
    assert type(json_safe(np.int64(7))) is int


def _png(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([_epoch(e) for e in (1, 2, 3)], id="train-and-val"),
        pytest.param([_epoch(e, val=False) for e in (1, 2, 3)], id="train-only"),
        pytest.param([_epoch(1)], id="one-epoch"),
    ],
)
def test_plot_curves_writes_a_png(rows, tmp_path: Path) -> None:
    path = plot_curves(rows, tmp_path / "plots" / "curves.png", title="run-a")
    image = _png(path)
    assert image.format == "PNG"
    assert image.width > 400 and image.height > 200
    # Something was drawn: a blank or failed figure has only a handful of colours.
    colors = image.convert("RGB").getcolors(maxcolors=1 << 16)  # None: more colours than that
    assert colors is None or len(colors) > 20


def test_the_subset_panel_appears_only_with_validation(tmp_path: Path) -> None:
    with_val = _png(plot_curves([_epoch(1), _epoch(2)], tmp_path / "val.png"))
    train_only = _png(plot_curves([_epoch(1, val=False), _epoch(2, val=False)], tmp_path / "train.png"))
    # Three panels side by side against two: the figure is half as wide again.
    assert with_val.width == pytest.approx(1.5 * train_only.width, rel=0.02)


def test_no_epochs_still_writes_every_file(tmp_path: Path) -> None:
    paths = write_run_outputs(tmp_path, config={"name": "empty"}, summary={"history": [], "metrics": {}})
    assert Path(paths["metrics_jsonl"]).read_text() == ""
    assert _png(Path(paths["curves_png"])).width > 400


def _reject(constant: str) -> None:
    raise ValueError(f"non-strict JSON constant {constant}")

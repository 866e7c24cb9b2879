"""What a training run leaves in its run directory: per-epoch metrics, the resolved config, curves, the summary.

Usage::

    from mm_ray.config.load import as_dict
    from mm_ray.train.outputs import write_run_outputs

    summary = fit(cfg)
    paths = write_run_outputs(Path(cfg.output_dir) / cfg.name, config=as_dict(cfg), summary=summary)
    paths["curves_png"]   # "runs/<name>/curves.png"

Files written (each overwritten when the run is run again, so they always describe the whole run,
resumed epochs included, because ``summary["history"]`` carries the epochs restored from the checkpoint):

=================  =====================================================================================
``metrics.jsonl``  one JSON object per epoch (``summary["history"]``); NaN becomes ``null``
``metrics.csv``    the same rows; columns: epoch, step, other bookkeeping (resumed_from), train_*, val_*,
                   then ``subset/<subset>/<metric>`` sorted; a missing or NaN value is an empty cell
``config.yaml``    the resolved config
``summary.json``   the final summary, strict JSON (no NaN/Infinity)
``curves.png``     loss and accuracy per epoch (train, val) and validation accuracy per modality subset
=================  =====================================================================================

Pure Python and matplotlib (drawn on a ``Figure`` with no pyplot, so no GUI backend and no global state):
nothing here needs Ray.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mm_ray.config.load import persistable

LEADING_COLUMNS = ("epoch", "step")
"""The first CSV columns, in this order, when present."""

SUBSET_PREFIX = "subset/"
"""Prefix of the per-modality-subset metrics: ``subset/<subset>/{accuracy,loss,samples}``."""


def write_run_outputs(
    run_dir: str | Path, *, config: Mapping[str, Any], summary: Mapping[str, Any]
) -> dict[str, str]:
    """Write every run output into ``run_dir`` (created); returns ``{"metrics_jsonl": path, ...}``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    history = [json_safe(row) for row in summary.get("history") or []]
    paths = {
        "metrics_jsonl": run_dir / "metrics.jsonl",
        "metrics_csv": run_dir / "metrics.csv",
        "config_yaml": run_dir / "config.yaml",
        "summary_json": run_dir / "summary.json",
        "curves_png": run_dir / "curves.png",
    }
    paths["metrics_jsonl"].write_text("".join(_strict_json(row) + "\n" for row in history))
    write_metrics_csv(history, paths["metrics_csv"])
    paths["config_yaml"].write_text(yaml.safe_dump(json_safe(persistable(dict(config))), sort_keys=False))
    paths["summary_json"].write_text(_strict_json(summary, indent=2) + "\n")
    run_name = config.get("name")
    title = f"mm-ray train: {run_name}" if run_name else "mm-ray train"
    task = config.get("task") or {}
    metric = {"multilabel": "map", "regression": "r2"}.get(task.get("kind", ""), "accuracy")
    plot_curves(history, paths["curves_png"], title=title, metric=metric)
    return {key: str(path) for key, path in paths.items()}


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: dicts (str keys), lists, str, int, float, bool, None.

    NaN and infinities become None (an empty subset's accuracy is NaN, and strict JSON has no NaN);
    numpy scalars and 0-d tensors become Python numbers; tuples become lists; anything else becomes str.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        return json_safe(item())
    return str(value)


def metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The union of the rows' keys in a stable order: epoch, step, other bookkeeping keys (first seen
    first), ``train_*`` and ``val_*`` (first seen first: the trainer's own order), ``subset/...`` sorted."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    leading = [k for k in LEADING_COLUMNS if k in keys]
    train = [k for k in keys if k.startswith("train_")]
    val = [k for k in keys if k.startswith("val_")]
    subsets = sorted(k for k in keys if k.startswith(SUBSET_PREFIX))
    grouped = {*leading, *train, *val, *subsets}
    other = [k for k in keys if k not in grouped]
    return [*leading, *other, *train, *val, *subsets]


def write_metrics_csv(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """One row per epoch, columns from ``metric_columns``; missing and NaN values are empty cells."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=metric_columns(history), restval="")
        writer.writeheader()
        # csv writes None as an empty cell, which is what a NaN becomes in json_safe.
        writer.writerows(json_safe(row) for row in history)
    return path


def plot_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "training curves",
    metric: str = "accuracy",
) -> Path:
    """Write a PNG of the run's curves per epoch; returns its path.

    Panels: loss (train, val), ``metric`` (the task's headline: accuracy, map, r2; train, val), and, when the
    run validated, the validation ``metric`` of every modality subset (one line each). A train-only run gets the first two panels
    with train lines only; every point has a marker, so a one-epoch run still shows its values.
    """
    # Imported here: only runs that plot pay for matplotlib. Figure without pyplot draws with Agg
    # when saved to PNG, never opens a window and keeps no global figure list to leak into.
    from matplotlib.figure import Figure

    # First-seen order: the trainer reports subsets singles first, which reads better than sorted.
    subsets = list(
        dict.fromkeys(k.split("/")[1] for row in history for k in row if k.startswith(SUBSET_PREFIX))
    )
    panels = 3 if subsets else 2
    fig = Figure(figsize=(5.2 * panels, 4.2), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    _panel(axes[0], history, {"train": "train_loss", "val": "val_loss"}, title="loss", ylabel="loss")
    _panel(
        axes[1], history, {"train": f"train_{metric}", "val": f"val_{metric}"}, title=metric, ylabel=metric
    )
    if subsets:
        keys = {subset: f"{SUBSET_PREFIX}{subset}/{metric}" for subset in subsets}
        _panel(axes[2], history, keys, title=f"validation {metric} by modality subset", ylabel=metric)
    _epoch_axes(axes, history)
    if not history:
        axes[0].text(0.5, 0.5, "no epochs yet", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _panel(
    ax: Any,
    history: Sequence[Mapping[str, Any]],
    lines: Mapping[str, str],
    *,
    title: str,
    ylabel: str = "accuracy",
) -> None:
    """One line per ``label -> metric key``; keys no epoch has are left out (train-only runs)."""
    drawn = 0
    for label, key in lines.items():
        epochs, values = _series(history, key)
        if epochs:
            ax.plot(epochs, values, marker="o", markersize=4, label=label)
            drawn += 1
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if ylabel in ("accuracy", "map"):
        ax.set_ylim(-0.02, 1.02)  # a fixed scale: accuracies of different runs compare at a glance
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7 if drawn > 3 else 8)


def _epoch_axes(axes: Sequence[Any], history: Sequence[Mapping[str, Any]]) -> None:
    """Whole-number epoch ticks, and room around a lone epoch (matplotlib would zoom to +-5 % of it and
    label the axis 0.96, 0.98, ...)."""
    from matplotlib.ticker import MaxNLocator

    epochs = {row["epoch"] for row in history if isinstance(row.get("epoch"), int)}
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            (epoch,) = epochs
            ax.set_xlim(epoch - 1, epoch + 1)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of ``key``, skipping epochs where it is missing, None or NaN."""
    points = [
        (int(row.get("epoch", i + 1)), float(row[key]))
        for i, row in enumerate(history)
        if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])
    ]
    return [e for e, _ in points], [v for _, v in points]


def _strict_json(value: Any, indent: int | None = None) -> str:
    # allow_nan=False: fail loudly here rather than write a file strict JSON readers reject.
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)

"""The sweep's two charts, drawn from ``mm_ray.tune.results`` records.

    plot_best_by_preset(records, "runs/sweep/best_by_preset.png", metric="val_accuracy", mode="max")
    plot_trial_curves(records, "runs/sweep/trial_curves.png", metric="val_accuracy", max_epochs=4)

``best_by_preset.png``: one bar per preset (fusion architecture), the best metric any of its trials reached,
with the number of trials that tried it. ``trial_curves.png``: the metric per epoch, one line per trial
coloured by preset; a trial the scheduler stopped early ends in a cross, so ASHA's cuts are visible.
Matplotlib ``Figure`` without pyplot, as in ``mm_ray.train.outputs``: no GUI backend, no global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mm_ray.tune.results import TrialRecord


def plot_best_by_preset(records: Sequence[TrialRecord], path: str | Path, *, metric: str, mode: str) -> Path:
    """Horizontal bars, best preset on top; presets whose trials never scored are left out."""
    from matplotlib.figure import Figure

    best: dict[str, float] = {}
    tried: dict[str, int] = {}
    pick = max if mode == "max" else min
    for r in records:
        tried[r.preset] = tried.get(r.preset, 0) + 1
        if r.best is not None:
            best[r.preset] = pick(best.get(r.preset, r.best), r.best)
    order = sorted(best, key=best.get, reverse=mode == "max")[::-1]  # barh draws bottom-up
    fig = Figure(figsize=(6.4, 0.5 * len(order) + 1.6), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(order, [best[p] for p in order], color="tab:blue")
    ax.bar_label(bars, labels=[f"{best[p]:.3f} ({tried[p]} trials)" for p in order], padding=3, fontsize=8)
    ax.set_xlabel(f"best {metric}")
    if metric.endswith("accuracy"):
        ax.set_xlim(0, 1.15)  # room for the labels; accuracies compare on a fixed scale
    ax.set_title(f"best {metric} per preset", fontsize=10)
    if not order:
        ax.text(0.5, 0.5, "no trial reported yet", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_trial_curves(
    records: Sequence[TrialRecord], path: str | Path, *, metric: str, max_epochs: int
) -> Path:
    """``metric`` per epoch for every trial; colour = preset, a cross = stopped early by the scheduler."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    presets = list(dict.fromkeys(r.preset for r in records))
    colours = {p: f"C{i % 10}" for i, p in enumerate(presets)}
    fig = Figure(figsize=(7.2, 4.4), layout="constrained")
    ax = fig.subplots()
    labelled: set[str] = set()
    for r in records:
        # A history row holds the metrics by the names the trainer reported them under.
        points = [(row["epoch"], row[metric]) for row in r.history if row.get(metric) is not None]
        if not points:
            continue
        epochs, values = zip(*points, strict=True)
        label = None if r.preset in labelled else r.preset
        labelled.add(r.preset)
        ax.plot(epochs, values, marker="o", markersize=3, color=colours[r.preset], alpha=0.8, label=label)
        if r.status == "stopped":
            ax.plot(epochs[-1], values[-1], marker="x", markersize=9, color="black")
    if any(r.status == "stopped" for r in records):
        ax.plot([], [], marker="x", linestyle="none", color="black", label="stopped early")
    ax.set_xlim(0.8, max(max_epochs, 1) + 0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, {len(records)} trials", fontsize=10)
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path

"""A sweep's result as text: the leaderboard, the summary and where its files are (``mm-ray tune`` prints it)."""

from __future__ import annotations

from typing import Any

from mm_ray.tables import format_summary, format_table
from mm_ray.tune.sweep import SweepResult


def sweep_report(result: SweepResult) -> str:
    """The leaderboard (best first), the sweep's summary, a resume hint when interrupted, the output paths."""
    tune = result.sweep.cfg.tune
    headers, rows = result.leaderboard()
    parts = [f"leaderboard ({tune.metric}, {tune.mode})", format_table(headers, rows)]
    shown: dict[str, Any] = {k: v for k, v in result.summary.items() if k not in ("outputs", "best")}
    best = result.best
    if best is not None:
        shown["best"] = {"trial": best.trial_id, "preset": best.preset, tune.metric: best.best}
    parts.append("\n" + format_summary("sweep summary", shown))
    if result.interrupted:
        parts.append(f"\ninterrupted: continue with `mm-ray tune --resume {result.sweep.results_dir}`")
    parts.append("\n" + format_summary("sweep outputs", result.outputs))
    return "\n".join(parts)

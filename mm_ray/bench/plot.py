"""A bar chart of an ingest benchmark: samples/s (end to end and steady) per pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_ingest(results: dict[str, dict[str, Any]], labels: dict[str, str], path: str | Path) -> Path:
    """Write a PNG comparing the pipelines; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    modes = [m for m in labels if m in results]  # the benchmark's own order: a, b, c
    names = [labels[m].replace(": ", "\n") for m in modes]
    total = [results[m]["samples_per_s"] for m in modes]
    steady = [results[m]["steady_samples_per_s"] for m in modes]
    xs = range(len(modes))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.bar([x - 0.2 for x in xs], total, width=0.4, label="end to end")
    ax.bar([x + 0.2 for x in xs], steady, width=0.4, label="after the first batch")
    for x, value in zip(xs, total, strict=True):
        ax.text(x - 0.2, value, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    for x, value in zip(xs, steady, strict=True):
        ax.text(x + 0.2, value, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set_ylabel("samples / s")
    ax.set_title("mm-ray bench ingest")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""Bar charts of the benchmarks: samples/s per mode, two bars each (end to end and steady)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mm_ray.bench.records import IngestRun, TrainRun

INGEST_BARS = (("samples_per_s", "end to end"), ("steady_samples_per_s", "after the first batch"))


def plot_ingest(results: Mapping[str, IngestRun], labels: dict[str, str], path: str | Path) -> Path:
    """Write a PNG comparing the ingest pipelines; returns its path."""
    return plot_modes(
        results, labels, path, bars=INGEST_BARS, title="mm-ray bench ingest", ylabel="samples / s"
    )


def plot_modes(
    results: Mapping[str, IngestRun | TrainRun],
    labels: dict[str, str],
    path: str | Path,
    *,
    bars: Sequence[tuple[str, str]],
    title: str,
    ylabel: str,
) -> Path:
    """Write a PNG with one group of bars per mode (in ``labels``' order), one bar per ``(field, legend)`` of
    ``bars`` (a field of the runs, e.g. ``steady_samples_per_s``), each labelled with its value; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    modes = [m for m in labels if m in results]  # the benchmark's own order
    names = [labels[m].replace(": ", "\n").replace(", ", "\n") for m in modes]
    xs = range(len(modes))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, (field, legend) in enumerate(bars):
        offset = (i - (len(bars) - 1) / 2) * width
        values = [getattr(results[m], field) for m in modes]
        ax.bar([x + offset for x in xs], values, width=width, label=legend)
        for x, value in zip(xs, values, strict=True):
            ax.text(x + offset, value, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""Where a run's Ray Train storage is, and how many epochs it has already finished (what a re-run resumes after).

    finished_epochs(cfg)   # 0 for a new run; k when <storage>/<name> holds epoch k's checkpoint

The driver needs this before the workers start: a resumed run's data must visit epoch k in the order an
uninterrupted run would (``mm_ray.data.epochs``), and the datasets are built before Ray Train hands the
workers their checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from mm_ray.config.schema import Config


def storage_path(path: str) -> str:
    """Ray Train wants an absolute local path or a URI; a relative path would resolve on each node."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def run_storage(cfg: Config) -> str:
    """``<train.storage_path or output_dir>/<name>``: the run's checkpoints, as ``fit`` names them."""
    return f"{storage_path(cfg.train.storage_path or cfg.output_dir).rstrip('/')}/{cfg.name}"


def finished_epochs(cfg: Config) -> int:
    """The epochs finished at the run's latest registered checkpoint (0 when the run has none: a new run, or
    local mode); a step checkpoint counts the epoch it interrupted as not finished."""
    from mm_ray.train.datasets import latest_position

    if not cfg.train.num_workers:
        return 0  # local mode keeps no checkpoints
    position = latest_position(run_storage(cfg))
    return 0 if position is None else position.epoch

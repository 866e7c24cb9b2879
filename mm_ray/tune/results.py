"""A finished (or interrupted) sweep as typed records: the leaderboard, trials.csv/json, the best config.

    record = trial_record(trial_id, config, rows, space=space, metric="val_accuracy", mode="max",
                          max_epochs=4, done=True, error=None, base_preset="late_concat")   # -> TrialRecord
    record.best, record.status, record.history[-1]["val_accuracy"]
    ranked = rank(records, mode="max")          # best first; trials without a value last
    headers, rows = leaderboard(ranked, space)  # what ``mm-ray tune`` prints
    write_trials(ranked, out_dir)               # trials.csv (one row per trial), trials.json (with history)
    read_trials(out_dir / "trials.json")        # the records back
    best_config(ranked, base, space)            # the best trial's full config, ready for ``mm-ray train``

A record's ``status`` is ``done`` (all epochs trained), ``stopped`` (the scheduler stopped it early),
``unfinished`` (the sweep was interrupted while it ran: ``--resume`` continues it) or ``error``.
``TrialRecord.to_dict`` is the one writer (trials.json, ``--json``), ``TrialRecord.from_dict`` the one reader.
Pure Python: ``mm_ray.tune.sweep`` turns Tune's ResultGrid into these inputs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from mm_ray.config.schema import Config
from mm_ray.models.presets import PRESETS
from mm_ray.records import RecordError, as_mapping, plain, record_fields
from mm_ray.train.outputs import json_safe
from mm_ray.tune.space import SearchSpace
from mm_ray.tune.trainable import trial_config

HISTORY_PREFIXES = ("train_", "val_", "subset/", "ingest_", "quarantine/")
"""Per-epoch metrics kept in a record's history (Tune's own bookkeeping columns are dropped); a streaming
trial's also carry its ingest counts."""

TrialStatus = Literal["done", "stopped", "unfinished", "error"]
STATUSES: tuple[str, ...] = typing.get_args(TrialStatus)


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial of a sweep: what it searched, how far it got, its best value and per-epoch history."""

    trial_id: str
    status: TrialStatus
    preset: str
    """The trial's fusion preset (the sweep's own when the space does not search ``model.preset``)."""
    params: Mapping[str, Any]
    """The searched keys the trial used (dotted: ``train.lr``), inactive conditional ones left out."""
    best: float | None
    """The best value of the sweep's metric (``tune.metric``) over its epochs; None when none was reported."""
    best_epoch: int | None
    epochs_run: int
    checkpoint: str | None
    """The trial's last checkpoint (its Train run's storage)."""
    error: str | None
    """The first line of the trial's error (``status`` ``error``)."""
    history: tuple[Mapping[str, Any], ...] = ()
    """One row per epoch: ``epoch`` and the metrics the trainer reported by name (``HISTORY_PREFIXES``)."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RecordError(f"trial record: status {self.status!r} is not one of {list(STATUSES)}")
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "history", tuple(dict(row) for row in self.history))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (non-finite metrics as None: JSON has no NaN)."""
        return json_safe(plain(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRecord:
        """A record ``to_dict`` wrote (trials.json, ``mm-ray tune --json``)."""
        data = as_mapping(data, "trial record")
        return cls(**record_fields(cls, data, f"trial record {data.get('trial_id')!r}"))


def trial_record(
    trial_id: str,
    config: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    space: SearchSpace,
    metric: str,
    mode: str,
    max_epochs: int,
    done: bool,
    error: str | None,
    base_preset: str,
) -> TrialRecord:
    """One trial's record from its sampled ``config`` and the rows it reported (one per epoch);
    ``base_preset`` is the preset of a sweep whose space does not search ``model.preset``."""
    history = _history(rows)
    scored = [r for r in history if _is_number(r.get(metric))]
    best = (max if mode == "max" else min)(scored, key=lambda r: r[metric]) if scored else None
    epochs_run = max((r["epoch"] for r in history), default=0)
    params = space.active(config)
    return TrialRecord(
        trial_id=trial_id,
        status=_status(done, error, epochs_run, max_epochs),
        preset=params.get("model.preset", base_preset),
        params=params,
        best=best[metric] if best else None,
        best_epoch=best["epoch"] if best else None,
        epochs_run=epochs_run,
        checkpoint=next((r["checkpoint_path"] for r in reversed(rows) if r.get("checkpoint_path")), None),
        error=error,
        history=tuple(history),
    )


def _history(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch: a trial restarted by ``--resume`` reports its later epochs again after the
    earlier ones, so the last report of each epoch wins."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in rows:
        if _is_number(row.get("epoch")):
            kept = {k: v for k, v in row.items() if k.startswith(HISTORY_PREFIXES)}
            by_epoch[int(row["epoch"])] = {"epoch": int(row["epoch"]), **kept}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _status(done: bool, error: str | None, epochs_run: int, max_epochs: int) -> TrialStatus:
    if error:
        return "error"
    # A trial interrupted after its last epoch but before Tune saw it end has trained all it will: done.
    if epochs_run >= max_epochs:
        return "done"
    return "stopped" if done else "unfinished"


def trial_epochs(records: Sequence[TrialRecord], *, trials: int, max_epochs: int) -> dict[str, Any]:
    """What early stopping saved: the epochs all trials trained, against every one of the sweep's ``trials``
    training all ``max_epochs`` (what FIFO would cost), and their ratio."""
    spent = sum(r.epochs_run for r in records)
    budget = trials * max_epochs
    return {
        "trial_epochs": spent,
        "trial_epochs_without_stopping": budget,
        "trial_epochs_fraction": round(spent / budget, 3) if budget else None,
    }


def rank(records: Sequence[TrialRecord], mode: str) -> list[TrialRecord]:
    """Best first by the record's ``best``; records without a value (errored, not started) last."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(
        records, key=lambda r: (r.best is None, sign * r.best if r.best is not None else 0.0, r.trial_id)
    )


def leaderboard(records: Sequence[TrialRecord], space: SearchSpace, metric: str) -> tuple[list, list]:
    """(headers, rows) of the leaderboard: preset and its family, every searched key (``-`` where a trial
    does not use it), the best ``metric``, its epoch, epochs run and status."""
    keys = [k for k in space.keys if k != "model.preset"]
    headers = ["trial", "preset", "family", *[short_key(k) for k in keys], f"best {metric}", "at epoch"]
    headers += ["epochs", "status"]
    rows = []
    for r in records:
        family = PRESETS[r.preset].family if r.preset in PRESETS else "-"
        values = [_show(r.params.get(k)) for k in keys]
        best = "-" if r.best is None else f"{r.best:.4f}"
        at = r.best_epoch if r.best_epoch is not None else "-"
        rows.append([r.trial_id, r.preset or "-", family, *values, best, at, r.epochs_run, r.status])
    return headers, rows


def short_key(key: str) -> str:
    """``train.lr_by_modality.text`` -> ``lr_by_modality.text``; ``model.width`` -> ``width``."""
    return key.split(".", 1)[1]


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def write_trials(records: Sequence[TrialRecord], out_dir: str | Path, space: SearchSpace) -> dict[str, str]:
    """``trials.csv`` (one row per trial, searched keys as columns) and ``trials.json`` (records with their
    per-epoch history); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"trials_csv": out / "trials.csv", "trials_json": out / "trials.json"}
    searched = [k for k in space.keys if k != "model.preset"]  # the preset has its own column
    columns = ["trial_id", "status", "preset", *searched, "best", "best_epoch", "epochs_run", "checkpoint"]
    with paths["trials_csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(json_safe({**r.params, **r.to_dict()}) for r in records)
    saved = [r.to_dict() for r in records]
    paths["trials_json"].write_text(json.dumps(saved, indent=2, allow_nan=False) + "\n")
    return {k: str(v) for k, v in paths.items()}


def read_trials(path: str | Path) -> list[TrialRecord]:
    """The records a sweep's ``trials.json`` holds (``write_trials``), in its order."""
    saved = json.loads(Path(path).read_text())
    if not isinstance(saved, list):
        raise RecordError(f"{path}: expected a list of trial records, got {type(saved).__name__}")
    return [TrialRecord.from_dict(r) for r in saved]


def best_config(records: Sequence[TrialRecord], base: Config, space: SearchSpace) -> Config | None:
    """The first ranked record's full config, named ``<base name>-best`` with its own run storage so that
    ``mm-ray train --config best_config.yaml`` trains it from scratch; None when no trial scored."""
    if not records or records[0].best is None:
        return None
    cfg = trial_config(base, space, records[0].params, name=f"{base.name}-best")
    # The trials' Train runs live in the experiment; the retrained one goes where `mm-ray train` puts runs.
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, storage_path=None))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

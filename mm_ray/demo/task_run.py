"""The task variants' learning check (``mm-ray demo`` with ``task.kind=multilabel|regression``).

    result = run_task_demo(load_config("pipelines/regression.yaml"))
    print(task_learning_table(result.rows)); result.verdict

1. write the variant's shards (``mm_ray.demo.task_variants``; reused when ``<run>/shards`` matches),
2. preprocess the train and val shards into caches (the regression targets' mean/std go into the manifest),
3. train every ``demo.train_presets`` run with Ray Train on the caches (modalities: text and features),
4. score each run's held-out metrics, every modality subset, against the variant's exact references:
   multilabel: the tag accuracy against the Bayes tag accuracy of that subset, mAP and F1 against the Bayes
   posterior's own on the same val samples (the oracle); regression: the mean R^2 over the targets against
   the best R^2 of that subset.

The verdict holds when every run's full-subset rows are within ``TOLERANCES`` of their references.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from mm_ray.config.schema import Config
from mm_ray.data.cache import Cache
from mm_ray.data.labels import with_classes
from mm_ray.demo.run import demo_caches
from mm_ray.demo.task_variants import write_task_dataset
from mm_ray.progress import ProgressFactory
from mm_ray.runtime import init_ray
from mm_ray.tables import format_table

logger = logging.getLogger(__name__)

TOLERANCES = {"tag_accuracy": 0.02, "map": 0.03, "micro_f1": 0.05, "macro_f1": 0.05, "r2": 0.03}
"""How far below its reference a metric may end and still pass (absolute: 0.02 = 2 points)."""

SUBSETS = ("text+features", "features", "text")


@dataclasses.dataclass(frozen=True)
class TaskRow:
    run: str
    subset: str
    metric: str
    reached: float
    reference: float
    of: str
    """What the reference is: ``Bayes`` (exact), ``best`` (exact best R^2), ``oracle`` (the Bayes posterior on
    the same val samples)."""

    @property
    def gap(self) -> float:
        return self.reached - self.reference

    @property
    def within(self) -> bool:
        return self.gap >= -TOLERANCES[self.metric]


@dataclasses.dataclass(frozen=True)
class TaskDemoResult:
    run_dir: str
    manifest: dict[str, Any]
    caches: dict[str, Cache]
    training: dict[str, Any]
    rows: list[TaskRow]

    @property
    def verdict(self) -> bool:
        """Every run's full-subset rows within their tolerance."""
        full = [r for r in self.rows if r.subset == SUBSETS[0]]
        return bool(full) and all(r.within for r in full)


def reuse_or_write_variant(cfg: Config, shard_dir: Path) -> dict[str, Any]:
    """The variant's manifest when ``shard_dir`` holds these settings' shards, else fresh shards'."""
    d, kind = cfg.demo, cfg.task.kind
    try:
        manifest = json.loads((shard_dir / "dataset.json").read_text())
        wanted = {
            "train": d.num_samples - round(d.num_samples * d.val_fraction),
            "val": round(d.num_samples * d.val_fraction),
        }
        if manifest["kind"] == kind and manifest["seed"] == d.seed and manifest["counts"] == wanted:
            logger.info("reusing the %s variant's shards in %s", kind, shard_dir)
            return manifest
    except (FileNotFoundError, ValueError, KeyError):
        pass
    return write_task_dataset(
        kind, str(shard_dir), num_samples=d.num_samples, samples_per_shard=d.samples_per_shard,
        val_fraction=d.val_fraction, seed=d.seed,
    )  # fmt: skip


def run_task_demo(cfg: Config, *, progress: ProgressFactory | None = None) -> TaskDemoResult:
    """Run the learning check of ``cfg``'s task variant (module docstring); starts or joins Ray."""
    from mm_ray.train.ray_trainer import fit

    run_dir = Path(cfg.output_dir) / cfg.name
    manifest = reuse_or_write_variant(cfg, run_dir / "shards")
    init_ray(cfg.ray)
    shards = {
        split: [str(run_dir / "shards" / name) for name in manifest["shards"][split]]
        for split in ("train", "val")
    }
    cfg = with_classes(cfg, shards["train"])  # multilabel: one tag map, the training shards', for both caches
    counts = {"counts": manifest["counts"]}
    caches = demo_caches(cfg, run_dir, shards, counts, progress)
    training = {}
    for preset in cfg.demo.train_presets:
        run_cfg = dataclasses.replace(
            cfg,
            name=preset,
            output_dir=str(run_dir / "train"),
            model=dataclasses.replace(cfg.model, preset=preset),
            train=dataclasses.replace(cfg.train, cache=caches["train"].uri, val_cache=caches["val"].uri),
        )
        training[preset] = fit(run_cfg)
    rows = [row for name, result in training.items() for row in task_rows(name, result.subsets, manifest)]
    return TaskDemoResult(str(run_dir), manifest, caches, training, rows)


def task_rows(run: str, subsets: dict[str, dict[str, Any]], manifest: dict[str, Any]) -> list[TaskRow]:
    """A run's held-out metrics per subset against the variant's references (module docstring)."""
    ref, oracle = manifest["reference"], manifest["oracle"]["val"]
    rows = []
    for subset in SUBSETS:
        got = subsets.get(subset)
        if got is None:
            continue
        if manifest["kind"] == "regression":
            rows.append(TaskRow(run, subset, "r2", got["r2"], ref["best_mean_r2"][subset], "best"))
            continue
        bayes = ref["bayes_tag_accuracy"][subset]["mean"]
        rows.append(TaskRow(run, subset, "tag_accuracy", got["tag_accuracy"], bayes, "Bayes"))
        if subset == SUBSETS[0]:
            rows.extend(
                TaskRow(run, subset, m, got[m], oracle[m], "oracle") for m in ("map", "micro_f1", "macro_f1")
            )
    return rows


def task_learning_table(rows: list[TaskRow]) -> str:
    """One line per run, subset and metric: reached, reference (what it is), gap in points, within tolerance."""
    return format_table(
        ["run", "subset", "metric", "reached", "reference", "gap (pts)", "within"],
        [
            [r.run, r.subset, r.metric, f"{r.reached:.3f}", f"{r.reference:.3f} ({r.of})", f"{100 * r.gap:+.1f}",
             f"{'yes' if r.within else 'NO'} (-{100 * TOLERANCES[r.metric]:.0f} pts)"]
            for r in rows
        ],
    )  # fmt: skip

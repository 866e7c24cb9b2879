"""``mm-ray demo``: the main job on the embedded default, end to end on local Ray.

Generates the synthetic benchmark, preprocesses it, trains ``demo.train_presets`` (and ``demo.variants``) with
Ray Train, scores each against the benchmark's analytic references, then runs a small Ray Tune sweep: see
``mm_ray.demo.run``, whose ``run_demo`` this calls. Prints the reference accuracies, the ingest summaries,
one line per epoch and per trial as they happen, each run's held-out accuracy against its reference, the
accuracy per modality subset, the retrieval table and the sweep's leaderboard (``--json`` for all of it).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from mm_ray.cli.common import PolledProgress, add_config_args, config_from_args, split_overrides, write_json
from mm_ray.demo.learning import TOLERANCE, caps_table, every_subset_holds, learning_table
from mm_ray.demo.run import DEMO_DEFAULTS, DemoResult, ingest_table, run_demo
from mm_ray.retrieval.metrics import retrieval_table
from mm_ray.tables import format_summary
from mm_ray.train.metrics import DEFAULT_REGISTRY, format_subset_table, subset_comparison_table
from mm_ray.train.outputs import json_safe


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job on local Ray: demo shards -> preprocess -> train with Ray Train -> accuracy against "
        "the benchmark's references -> a small Ray Tune sweep",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    rest, overrides = split_overrides(args.overrides)
    if rest:
        raise SystemExit(f"mm-ray demo: not key=value: {' '.join(rest)}")
    if args.config is None:
        overrides = [*DEMO_DEFAULTS, *overrides]
    started = time.perf_counter()
    cfg = config_from_args(args, overrides)
    if cfg.task.kind != "classification":
        return task_demo(cfg, args.json, started)
    result = run_demo(cfg, progress=PolledProgress)
    print("\nthe benchmark's references")
    print(caps_table(result.manifest))
    print(ingest_table(result.caches))
    for split, cache in result.caches.items():
        if cache.manifest.samples_quarantined:
            print(format_summary(f"quarantine ({split})", cache.manifest.quarantine_reasons))
    print_training(result)
    if result.sweep is not None:
        from mm_ray.tune.report import sweep_report

        print("\n" + sweep_report(result.sweep))
    minutes, seconds = divmod(round(time.perf_counter() - started), 60)
    print(f"\ndemo finished in {minutes} min {seconds:02d} s: {verdict(result)}")
    write_json(args.json, json_safe(summary(result)))
    return 0


def task_demo(cfg, json_path: str | None, started: float) -> int:
    """``task.kind=multilabel|regression``: the task variant's learning check (``mm_ray.demo.task_run``)."""
    from mm_ray.demo.task_run import run_task_demo, task_learning_table

    result = run_task_demo(cfg, progress=PolledProgress)
    print(f"\nheld-out {cfg.task.kind} metrics against the variant's references")
    print(task_learning_table(result.rows))
    for name, trained in result.training.items():
        print(f"\n{name}: validation metrics by modality subset")
        print(format_subset_table(trained.subsets))
    minutes, seconds = divmod(round(time.perf_counter() - started), 60)
    held = "every run within its tolerance" if result.verdict else "NOT every run within its tolerance"
    print(f"\ndemo finished in {minutes} min {seconds:02d} s: {held}")
    rows = [{**dataclasses.asdict(r), "within": r.within} for r in result.rows]
    write_json(json_path, json_safe({"rows": rows, "verdict": result.verdict, "manifest": result.manifest}))
    return 0


def verdict(result: DemoResult) -> str:
    """One line: whether the best fusion came within the tolerance of the benchmark's Bayes accuracy."""
    fusions = [r for r in result.learning if r.reference == "Bayes" and r.preset in result.training]
    if not fusions:
        return "no fusion model was trained"
    best = max(fusions, key=lambda r: r.accuracy)
    within = abs(best.gap_points) <= 100 * TOLERANCE
    how = "within" if within else "NOT within"
    return (
        f"{best.preset} {best.accuracy:.3f} held out, {how} {100 * TOLERANCE:.0f} pts of the Bayes accuracy "
        f"{best.reference_accuracy:.3f} ({best.gap_points:+.1f} pts)"
    )


def print_training(result: DemoResult) -> None:
    """The learning table and its verdict, then the accuracy per modality subset, then retrieval."""
    if not result.training:
        return
    print("\nheld-out accuracy against the benchmark's references")
    print(learning_table(result.learning))
    holds = every_subset_holds(result.learning)
    if holds is not None:
        met = [r.preset for r in result.learning if r.every_subset.startswith("ok")]
        print(
            f"every subset: {', '.join(met)} within {100 * TOLERANCE:.0f} pts of every subset's cap"
            if holds
            else "every subset: no run came within the tolerance of every subset's cap"
        )
    if not result.expectations_met:
        samples = result.caches["train"].samples
        print(
            f"(a gap to the reference is expected with {samples:,} training samples: "
            "pipelines/demo_zoo.yaml trains at the scale that reaches it)"
        )
    subsets = {name: r.subsets for name, r in result.training.items()}
    if result.ensemble is not None:
        subsets[result.ensemble["name"]] = result.ensemble["subsets"]
    variants = any(name != r.preset for name, r in result.training.items())
    if len(subsets) > 1 and (result.ensemble is not None or variants):
        print("\nvalidation accuracy by modality subset, every run")
        registry = result.registry or DEFAULT_REGISTRY
        print(subset_comparison_table(subsets, caps=result.manifest.get("caps"), registry=registry))
    else:
        best = max(
            (r for r in result.learning if r.preset in result.training), key=lambda r: r.accuracy
        ).preset
        print(f"\n{best}: validation accuracy by modality subset")
        print(format_subset_table(result.training[best].subsets))
    if result.retrieval:
        print("\ncross-modal retrieval on the val shards (chance in brackets)")
        print(retrieval_table({name: r["retrieval"] for name, r in result.retrieval.items()}))


def summary(result: DemoResult) -> dict[str, Any]:
    """The demo's result as plain data for ``--json``."""
    return {
        "run_dir": result.run_dir,
        "bayes_accuracy": result.manifest["bayes_accuracy"],
        "caps": result.manifest["caps"],
        "preprocess": {
            split: {"out": c.uri, **(c.manifest.ingest.to_dict() if c.manifest.ingest else {})}
            for split, c in result.caches.items()
        },
        "training": {name: r.as_dict() for name, r in result.training.items()},
        "ensemble": result.ensemble,
        "retrieval": result.retrieval,
        "learning": [dataclasses.asdict(r) for r in result.learning],
        "expectations_met": result.expectations_met,
        "sweep": result.sweep.summary if result.sweep is not None else None,
    }

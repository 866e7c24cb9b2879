"""``mm-ray demo``: the main job on the embedded default, end to end on local Ray.

1. generate the synthetic benchmark shards (skipped when ``<run>/shards`` already matches),
2. train a tokenizer on the training captions,
3. preprocess the train and val shards through the per-modality actor pools into the cache,
4. train every preset in ``demo.train_presets`` with Ray Train on the cache (a resumable run each),
5. run a small Ray Tune sweep over ``demo.sweep_presets`` (one trial each, ASHA; ``mm_ray.tune``),
6. print the benchmark's reference accuracies, the ingest summaries, each preset's held-out accuracy against
   its analytic reference, the best preset's accuracy per modality subset and the sweep's leaderboard
   (``--json`` for all of it).

Outputs go to ``<output_dir>/<name>`` (``runs/demo`` with ``pipelines/demo.yaml``): ``shards/``, ``cache/``
``train/<preset>/`` (checkpoints, metrics, curves) and ``sweep/`` (the Tune experiment and its results).
Running it again reuses the shards and resumes or skips finished training runs and sweep trials.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from mm_ray.cli.common import add_config_args, config_from_args, split_overrides
from mm_ray.cli.make_shards import caps_table, generate
from mm_ray.cli.preprocess import obtain_tokenizer, run_preprocess
from mm_ray.cli.report import format_summary, format_table, write_json
from mm_ray.cli.tune import print_results
from mm_ray.cluster.storage import warn_if_unshared
from mm_ray.config.load import ConfigError, as_dict
from mm_ray.config.schema import Config, DemoConfig
from mm_ray.demo.generate import load_manifest, shard_paths
from mm_ray.demo.learning import LearningRow, expectations_met, learning_rows
from mm_ray.models import PRESETS
from mm_ray.runtime import init_ray
from mm_ray.train.metrics import format_subset_table
from mm_ray.train.outputs import json_safe

DEMO_DEFAULTS = (
    "name=demo",
    "demo.num_samples=6000",
    "demo.samples_per_shard=500",
    "demo.min_image_px=96",
    "demo.max_image_px=192",
    "image.size=48",
    "audio.n_mels=32",
    "model.width=32",
    "train.epochs=12",
    "train.lr=0.002",
    "train.num_workers=1",
)
"""The embedded default of ``mm-ray demo`` (no ``--config``): the settings of ``pipelines/demo.yaml``, which
a unit test keeps equal. Laptop-sized: minutes on 2 cores."""


def demo_shards(demo: DemoConfig, shard_dir: Path) -> dict[str, Any]:
    """Reuse existing shards when they were generated with the same settings, else generate."""
    try:
        manifest = load_manifest(shard_dir)
        same = (
            manifest["seed"] == demo.seed
            and manifest["counts"]["total"] == demo.num_samples
            and manifest["image_size"] == [demo.min_image_px, demo.max_image_px]
        )
        if same:
            print(f"reusing demo shards in {shard_dir}")
            return manifest
    except (FileNotFoundError, ValueError, KeyError):
        pass
    return generate(demo, str(shard_dir))


def check_presets(presets: list[str], key: str = "demo.train_presets") -> None:
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(f"{key}: unknown preset(s) {unknown}; choose from {sorted(PRESETS)}")


DEMO_SWEEP_LR = (1.0e-3, 4.0e-3)
"""The learning-rate range the demo sweep samples (log-uniform) for each preset."""


def demo_sweep(cfg: Config, run_dir: Path) -> tuple[dict[str, Any], Any] | None:
    """The small sweep the demo ends with: one trial per ``demo.sweep_presets`` (a grid) with a sampled
    learning rate, ``demo.sweep_epochs`` epochs each, ASHA, on the demo cache; returns (summary, sweep).

    The experiment is ``<run>/sweep``: a second demo run collects it again instead of re-training it.
    """
    if not cfg.demo.sweep_presets:
        return None
    import ray.tune

    from mm_ray.cli.tune import trial_log
    from mm_ray.tune.space import parse_space
    from mm_ray.tune.sweep import plan_sweep, resume_sweep, run_sweep

    space = parse_space(
        {
            "model.preset": {"grid": list(cfg.demo.sweep_presets)},
            "train.lr": {"loguniform": list(DEMO_SWEEP_LR)},
        }
    )
    sweep_cfg = dataclasses.replace(
        cfg,
        name="sweep",
        output_dir=str(run_dir),
        train=dataclasses.replace(
            cfg.train,
            cache=str(run_dir / "cache" / "train"),
            val_cache=str(run_dir / "cache" / "val"),
            epochs=cfg.demo.sweep_epochs,
        ),
        tune=dataclasses.replace(
            cfg.tune, num_samples=1, searcher="random", scheduler="asha", grace_period=1, storage_path=None
        ),
    )
    sweep = plan_sweep(sweep_cfg, space=space)
    print(
        f"\nsweeping {len(cfg.demo.sweep_presets)} presets with Ray Tune -> {sweep.results_dir}", flush=True
    )
    if ray.tune.Tuner.can_restore(sweep.experiment_path):
        return resume_sweep(sweep.results_dir), sweep
    return run_sweep(sweep, callbacks=[trial_log(sweep)]), sweep


def train_presets(cfg: Config, run_dir: Path) -> dict[str, dict[str, Any]]:
    """Train each of ``demo.train_presets`` on the demo cache; returns each run's summary by preset."""
    # Imported here: Ray Train is heavy to import and a demo without training never needs it.
    from mm_ray.train.outputs import write_run_outputs
    from mm_ray.train.ray_trainer import fit

    train_dir = run_dir / "train"
    summaries = {}
    for preset in cfg.demo.train_presets:
        run_cfg = dataclasses.replace(
            cfg,
            name=preset,
            output_dir=str(train_dir),
            model=dataclasses.replace(cfg.model, preset=preset),
            train=dataclasses.replace(
                cfg.train, cache=str(run_dir / "cache" / "train"), val_cache=str(run_dir / "cache" / "val")
            ),
        )
        print(f"training {preset} ({cfg.train.epochs} epochs) -> {train_dir / preset}", flush=True)
        summary = fit(run_cfg)
        summary["outputs"] = write_run_outputs(train_dir / preset, config=as_dict(run_cfg), summary=summary)
        print(
            f"  {preset}: val accuracy {summary['metrics'].get('val_accuracy', float('nan')):.3f}", flush=True
        )
        summaries[preset] = summary
    return summaries


def run_demo(cfg: Config) -> dict[str, Any]:
    check_presets(cfg.demo.train_presets)
    check_presets(cfg.demo.sweep_presets, key="demo.sweep_presets")
    run_dir = Path(cfg.output_dir) / cfg.name
    shard_dir = run_dir / "shards"
    manifest = demo_shards(cfg.demo, shard_dir)
    print(caps_table(manifest))
    init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory_mb)
    warn_if_unshared(cfg.output_dir)
    train, val = shard_paths(shard_dir, "train"), shard_paths(shard_dir, "val")
    tokenizer_json = obtain_tokenizer(cfg, train)
    ingest = {
        split: run_preprocess(
            cfg, shards, run_dir / "cache" / split, tokenizer_json, expected=manifest["counts"][split]
        )
        for split, shards in (("train", train), ("val", val))
    }
    trained = train_presets(cfg, run_dir)
    swept = demo_sweep(cfg, run_dir)
    rows = learning_rows(
        {p: s["metrics"]["val_accuracy"] for p, s in trained.items()},
        manifest,
        modalities=cfg.model.modalities,
    )
    return {
        "run_dir": str(run_dir),
        "bayes_accuracy": manifest["bayes_accuracy"],
        "caps": manifest["caps"],
        "preprocess": ingest,
        "training": trained,
        "learning": [dataclasses.asdict(r) for r in rows],
        "expectations_met": expectations_met(rows) if rows else None,
        # The sweep's records and its Sweep (for printing the leaderboard); `main` keeps them out of --json.
        "sweep": swept,
    }


def learning_table(rows: list[LearningRow]) -> str:
    """Each trained preset's held-out accuracy next to its analytic reference."""
    body = [
        [
            r.preset,
            f"{r.accuracy:.3f}",
            r.reference,
            f"{r.reference_accuracy:.3f}",
            f"{r.gap_points:+.1f}",
            r.verdict,
        ]
        for r in rows
    ]
    return format_table(
        ["preset", "val accuracy", "reference", "reference acc", "gap (pts)", "expectation"], body
    )


def print_training(summary: dict[str, Any]) -> None:
    """The learning table, then the best preset's accuracy per modality subset."""
    if not summary["training"]:
        return
    rows = [LearningRow(**r) for r in summary["learning"]]
    print("\nheld-out accuracy against the benchmark's references")
    print(learning_table(rows))
    if not summary["expectations_met"]:
        samples = summary["preprocess"]["train"]["samples_ok"]
        print(
            f"(a gap to the reference is expected with {samples:,} training samples: "
            "pipelines/demo_zoo.yaml trains at the scale that reaches it)"
        )
    best = max(rows, key=lambda r: r.accuracy).preset
    print(f"\n{best}: validation accuracy by modality subset")
    print(format_subset_table(summary["training"][best]["subsets"]))


def ingest_table(ingest: dict[str, dict[str, Any]]) -> str:
    rows = [
        [split, s["samples_ok"], s["samples_quarantined"], s["shards"], s["samples_per_s"], s["out"]]
        for split, s in ingest.items()
    ]
    return format_table(["split", "samples ok", "quarantined", "shards", "samples/s", "cache"], rows)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate demo shards and preprocess them on local Ray (the main job)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    rest, overrides = split_overrides(args.overrides)
    if rest:
        raise SystemExit(f"mm-ray demo: not key=value: {' '.join(rest)}")
    if args.config is None:
        overrides = [*DEMO_DEFAULTS, *overrides]
    summary = run_demo(config_from_args(args, overrides))
    print(ingest_table(summary["preprocess"]))
    for split, s in summary["preprocess"].items():
        if s["samples_quarantined"]:
            print(format_summary(f"quarantine ({split})", s["quarantine_reasons"]))
    print_training(summary)
    swept = summary.pop("sweep")
    if swept is not None:
        sweep_summary, sweep = swept
        print_results(sweep_summary, sweep)
        summary["sweep"] = {k: v for k, v in sweep_summary.items() if k != "records"}
    write_json(args.json, json_safe(summary))
    return 0

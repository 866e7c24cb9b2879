"""``mm-ray demo``: the main job on the embedded default, end to end on local Ray.

1. generate the synthetic benchmark shards (skipped when ``<run>/shards`` already matches),
2. train a tokenizer on the training captions,
3. preprocess the train and val shards through the per-modality actor pools into the cache,
4. print the benchmark's reference accuracies and the ingest summaries (``--json`` for all of it).

Outputs go to ``<output_dir>/<name>`` (``runs/demo`` with ``pipelines/demo.yaml``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mm_ray.cli.common import add_config_args, config_from_args, split_overrides
from mm_ray.cli.make_shards import caps_table, generate
from mm_ray.cli.preprocess import obtain_tokenizer, run_preprocess
from mm_ray.cli.report import format_summary, format_table, write_json
from mm_ray.config.schema import Config, DemoConfig
from mm_ray.demo.generate import load_manifest, shard_paths
from mm_ray.runtime import init_ray


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


def run_demo(cfg: Config) -> dict[str, Any]:
    run_dir = Path(cfg.output_dir) / cfg.name
    shard_dir = run_dir / "shards"
    manifest = demo_shards(cfg.demo, shard_dir)
    print(caps_table(manifest))
    init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory_mb)
    train, val = shard_paths(shard_dir, "train"), shard_paths(shard_dir, "val")
    tokenizer_json = obtain_tokenizer(cfg, train)
    ingest = {
        split: run_preprocess(
            cfg, shards, run_dir / "cache" / split, tokenizer_json, expected=manifest["counts"][split]
        )
        for split, shards in (("train", train), ("val", val))
    }
    return {
        "run_dir": str(run_dir),
        "bayes_accuracy": manifest["bayes_accuracy"],
        "caps": manifest["caps"],
        "preprocess": ingest,
    }


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
        overrides = ["name=demo", *overrides]  # the embedded default: runs/demo
    summary = run_demo(config_from_args(args, overrides))
    print(ingest_table(summary["preprocess"]))
    for split, s in summary["preprocess"].items():
        if s["samples_quarantined"]:
            print(format_summary(f"quarantine ({split})", s["quarantine_reasons"]))
    write_json(args.json, summary)
    return 0

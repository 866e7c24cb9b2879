"""``mm-ray make-shards OUT``: write the synthetic tri-modal benchmark as webdataset shards.

Sizes and seed come from the ``demo`` config section, e.g.
``mm-ray make-shards data/demo demo.num_samples=20000 demo.samples_per_shard=500``.
The manifest ``OUT/dataset.json`` carries the exact Bayes accuracy and every modality subset's cap.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from mm_ray.cli.common import add_config_args, config_from_args, split_overrides
from mm_ray.cli.progress import callback_bar
from mm_ray.cli.report import format_summary, format_table, write_json
from mm_ray.config.schema import DemoConfig
from mm_ray.demo.generate import make_shards


def generate(demo: DemoConfig, out_dir: str) -> dict[str, Any]:
    """Write the shards with a progress bar; returns the manifest."""
    progress, bar = callback_bar("make-shards", demo.num_samples)
    try:
        return make_shards(
            out_dir,
            num_samples=demo.num_samples,
            samples_per_shard=demo.samples_per_shard,
            val_fraction=demo.val_fraction,
            seed=demo.seed,
            image_size=(demo.min_image_px, demo.max_image_px),
            progress=progress,
        )
    finally:
        bar.close()


def caps_table(manifest: dict[str, Any]) -> str:
    """The benchmark's reference accuracies as a table (Bayes, every subset, additive reference)."""
    rows = [[subset, f"{acc:.4f}"] for subset, acc in manifest["caps"].items()]
    rows.append(["additive fusion (fitted)", f"{manifest['additive_fusion']:.4f}"])
    rows.append(["chance", f"{manifest['chance_accuracy']:.4f}"])
    return format_table(["modalities", "best achievable accuracy"], rows)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-shards", help="write the synthetic benchmark shards with a known Bayes accuracy")
    p.add_argument("out", nargs="+", help="output directory, then optional key=value overrides (demo.*)")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    rest, overrides = split_overrides(args.out)
    if len(rest) != 1:
        raise SystemExit("mm-ray make-shards: give exactly one output directory")
    cfg = config_from_args(args, overrides)
    start = time.perf_counter()
    manifest = generate(cfg.demo, rest[0])
    seconds = time.perf_counter() - start
    summary = {
        "out": rest[0],
        "samples": manifest["counts"],
        "shards": {split: len(names) for split, names in manifest["shards"].items()},
        "bayes_accuracy": manifest["bayes_accuracy"],
        "seconds": round(seconds, 2),
        "samples_per_s": round(cfg.demo.num_samples / seconds, 1),
    }
    print(format_summary("make-shards summary", summary))
    print(caps_table(manifest))
    write_json(args.json, {**summary, "caps": manifest["caps"]})
    return 0

"""``mm-ray make-shards OUT``: write the synthetic tri-modal benchmark as webdataset shards.

Sizes and seed come from the ``demo`` config section, e.g.
``mm-ray make-shards data/demo demo.num_samples=20000 demo.samples_per_shard=500``.
The manifest ``OUT/dataset.json`` carries the exact Bayes accuracy and every modality subset's cap.
"""

from __future__ import annotations

import argparse
import time

from mm_ray.cli.common import PolledProgress, add_config_args, config_from_args, split_overrides, write_json
from mm_ray.demo.dataset import write_dataset
from mm_ray.demo.learning import caps_table
from mm_ray.tables import format_summary


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
    if cfg.task.kind != "classification":
        return _task_variant(cfg, rest[0], args.json)
    start = time.perf_counter()
    manifest = write_dataset(cfg.demo, rest[0], progress=PolledProgress)
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


def _task_variant(cfg, out: str, json_path: str | None) -> int:
    """``task.kind=multilabel|regression``: the task variant's shards (text + features) and references."""
    from mm_ray.demo.task_variants import write_task_dataset

    d = cfg.demo
    start = time.perf_counter()
    manifest = write_task_dataset(
        cfg.task.kind, out, num_samples=d.num_samples, samples_per_shard=d.samples_per_shard,
        val_fraction=d.val_fraction, seed=d.seed,
    )  # fmt: skip
    summary = {
        "out": out,
        "task": cfg.task.kind,
        "samples": manifest["counts"],
        "shards": {split: len(names) for split, names in manifest["shards"].items()},
        "seconds": round(time.perf_counter() - start, 2),
    }
    print(format_summary("make-shards summary", summary))
    print(format_summary("references", _flat(manifest["reference"])))
    print(format_summary("the Bayes predictor on the val shards", manifest["oracle"]["val"]))
    write_json(json_path, {**summary, "reference": manifest["reference"], "oracle": manifest["oracle"]})
    return 0


def _flat(reference: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in reference.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            out[f"{prefix}{key}"] = round(value, 4) if isinstance(value, float) else value
    return out

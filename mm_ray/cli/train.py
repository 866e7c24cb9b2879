"""``mm-ray train [--config F] [key=value ...] [--json PATH]``: train a fusion model on a preprocessed cache.

    mm-ray preprocess shards/ --out runs/cache image.size=64
    mm-ray train train.cache=runs/cache train.val_cache=runs/val-cache model.preset=gated train.epochs=5

Runs Ray Train workers (``train.num_workers``), checkpoints every epoch under
``<train.storage_path or output_dir>/<name>``, and prints the final metrics and the validation accuracy per
modality subset. Running the same command again with the same ``name`` resumes from the latest checkpoint.

The run directory ``<output_dir>/<name>`` also gets ``metrics.jsonl`` and ``metrics.csv`` (one row per
epoch), ``config.yaml`` (the resolved config), ``summary.json`` and ``curves.png`` (see
``mm_ray.train.outputs``); their paths are printed last and are under ``outputs`` in ``--json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mm_ray.cli.common import add_config_args, config_from_args
from mm_ray.cli.report import format_summary, write_json
from mm_ray.cluster.storage import warn_if_unshared
from mm_ray.config.load import as_dict
from mm_ray.runtime import init_ray
from mm_ray.train.metrics import format_subset_table
from mm_ray.train.outputs import json_safe, write_run_outputs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a fusion model on a preprocessed cache with Ray Train")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. train.cache=DIR)")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, args.overrides)
    init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory_mb)
    warn_if_unshared(cfg.train.storage_path or cfg.output_dir)
    # Imported here: Ray Train is heavy to import and the other commands never need it.
    from mm_ray.train.ray_trainer import fit

    summary = fit(cfg)
    shown = {k: v for k, v in summary.items() if k not in ("subsets", "history")}
    print(format_summary("train summary", shown))
    if summary["subsets"]:
        print("\nvalidation accuracy by modality subset")
        print(format_subset_table(summary["subsets"]))
    outputs = write_run_outputs(Path(cfg.output_dir) / cfg.name, config=as_dict(cfg), summary=summary)
    print("\n" + format_summary("run outputs", outputs))
    # json_safe: an empty subset's NaN accuracy becomes null, so --json is strict JSON like summary.json.
    write_json(args.json, json_safe({**summary, "outputs": outputs}))
    return 0

"""``mm-ray train [--config F] [key=value ...] [--json PATH]``: train a fusion model with Ray Train.

    mm-ray preprocess shards/ --out runs/cache image.size=64
    mm-ray train train.cache=runs/cache train.val_cache=runs/val-cache model.preset=gated train.epochs=5

Calls ``mm_ray.fit`` (``mm_ray.train.ray_trainer``): Ray Train workers (``train.num_workers``), a checkpoint
every epoch under ``<train.storage_path or output_dir>/<name>``, one progress line per epoch as it ends, then
the final metrics and the validation accuracy per modality subset. Running the same command again with the
same ``name`` resumes from the latest checkpoint. The run directory ``<output_dir>/<name>`` gets
``metrics.jsonl``, ``metrics.csv``, ``config.yaml``, ``summary.json`` and ``curves.png``; their paths are
printed, then where the run is tracked (``track.*``: TensorBoard on by default, MLflow with ``track.mlflow``)
and the command that shows it; both are under ``outputs`` / ``tracking`` in ``--json``.
"""

from __future__ import annotations

import argparse

from mm_ray.cli.common import add_config_args, config_from_args, write_json
from mm_ray.tables import format_summary
from mm_ray.track.run import view_commands
from mm_ray.train.metrics import format_subset_table
from mm_ray.train.outputs import json_safe


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a fusion model with Ray Train, on a preprocessed cache (train.cache=DIR) or streaming from shards (data.shards=[...])",
    )
    p.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. train.cache=DIR)")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, args.overrides)
    # Imported here: Ray Train is heavy to import and `mm-ray train -h` should not wait for it.
    from mm_ray.train.ray_trainer import fit

    result = fit(cfg)
    summary = result.as_dict()
    shown = {k: v for k, v in summary.items() if k not in ("subsets", "history", "outputs", "tracking")}
    print(format_summary("train summary", shown))
    if result.subsets:
        print("\nvalidation accuracy by modality subset")
        print(format_subset_table(result.subsets))
    print("\n" + format_summary("run outputs", result.outputs))
    if result.tracking:
        print("\n" + format_summary("experiment tracking", result.tracking))
        print("\n".join(f"  view: {command}" for command in view_commands(result.tracking).values()))
    # json_safe: an empty subset's NaN accuracy becomes null, so --json is strict JSON like summary.json.
    write_json(args.json, json_safe(summary))
    return 0

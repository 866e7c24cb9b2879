"""``mm-ray evaluate CHECKPOINT SHARDS... [key=value ...] [--json PATH]``: score a checkpoint on any shards.

    mm-ray evaluate runs/demo/checkpoint_2025-01-01_12-00-00.000000 shards/val-{000000..000001}.tar
    mm-ray evaluate runs/demo shards/ pools.image.num_cpus=0.5 --json eval.json   # a run dir: its latest
    mm-ray evaluate runs/u_image shards/ --ensemble runs/u_audio runs/u_text      # averaged predictions
    mm-ray evaluate runs/demo shards/ --workers 4      # 4 scoring actors, each on its part of the shards

Calls ``mm_ray.evaluate``: the shards are decoded and tokenized with the checkpoint's own settings and
tokenizer (see ``mm_ray.train.evaluate``); ``--config FILE`` and ``key=value`` overrides are laid over the checkpoint's
saved config. Prints a short summary and accuracy/loss per modality subset. Exit codes: 2 for a path that
is not a checkpoint, a bad config key or shards matching nothing; 3 when the error budget is exceeded.
"""

from __future__ import annotations

import argparse
from typing import Any

from mm_ray.cli.common import (
    PolledProgress,
    add_checkpoint_and_shards_args,
    add_config_args,
    split_overrides,
    write_json,
)
from mm_ray.tables import format_summary
from mm_ray.train.evaluate import evaluate
from mm_ray.train.metrics import format_class_table, format_subset_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a checkpoint on any shard set, per modality subset")
    add_checkpoint_and_shards_args(p)
    p.add_argument(
        "--batch-size", type=int, help="samples per scored batch (default: the training batch size)"
    )
    p.add_argument("--quarantine-log", metavar="PATH", help="write the quarantined samples as JSON lines")
    p.add_argument(
        "--ensemble",
        nargs="+",
        metavar="CKPT",
        default=[],
        help="average the predictions of these checkpoints with CHECKPOINT's (model-level fusion, e.g. the "
        "three unimodal baselines); they must be trained on the same cache",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="score on this many Ray actors (model replicas), each on its part of the shards, the sums added up "
        "(the path of a training run's distributed validation; train.cpus_per_worker CPUs each, a GPU with "
        "train.use_gpu); default 1 (an --ensemble: in this process); 0 = in this process",
    )
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    specs, overrides = split_overrides(args.shards)
    result = evaluate(
        args.checkpoint,
        specs,
        overrides=overrides,
        config_file=args.config,
        batch_size=args.batch_size,
        quarantine_log=args.quarantine_log,
        progress=PolledProgress,
        ensemble=args.ensemble,
        workers=args.workers,
    )
    if result["picked_from"]:
        print(
            f"latest checkpoint of {result['picked_from']}: {result['checkpoint']} (epoch {result['epoch']})"
        )
    print(format_summary("evaluate summary", _shown(result)))
    classification = result.get("task", "classification") == "classification"
    print(f"\n{'accuracy' if classification else 'metrics'} by modality subset")
    print(format_subset_table(result["subsets"]))
    if result["classes"]:
        print(
            f"\n{'accuracy by class' if classification else 'by ' + _unit(result['task'])} (every modality)"
        )
        print(format_class_table(result["classes"]))
    write_json(args.json, result)
    return 0


def _unit(task: str) -> str:
    return "tag" if task == "multilabel" else "target"


def _shown(result: dict[str, Any]) -> dict[str, Any]:
    # The subsets get their own table; an unset "picked_from" (a checkpoint given directly) says nothing.
    return {k: v for k, v in result.items() if k not in ("subsets", "classes") and v is not None}

"""``mm-ray predict CHECKPOINT SHARDS... --out DIR|s3://... [key=value ...] [--json PATH]``: batch inference.

    mm-ray predict runs/demo "shards/new-*.tar" --out runs/demo/predictions
    mm-ray predict runs/demo s3://bucket/new-{000..099}.tar --out s3://bucket/predictions predict.replicas=4
    mm-ray predict runs/demo shards/ --out preds predict.embedding=true     # also the fused embedding

Calls ``mm_ray.predict``: the shards go through the checkpoint's own preprocessing pools, then a pool of model
replicas; one Parquet file per shard (``__key__``, ``predicted``, ``probabilities``). Run it again to finish an
interrupted run: shards with a file are skipped. Exit codes: 2 for a path that is not a checkpoint, a bad config
key or shards matching nothing; 3 when the error budget is exceeded.
"""

from __future__ import annotations

import argparse

from mm_ray.cli.common import (
    PolledProgress,
    add_checkpoint_and_shards_args,
    add_config_args,
    split_overrides,
    write_json,
)
from mm_ray.tables import format_summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict every sample of a shard set with a checkpoint, as Parquet")
    add_checkpoint_and_shards_args(p)
    p.add_argument(
        "--out", metavar="DIR", required=True, help="output directory or s3:// prefix (one file a shard)"
    )
    p.add_argument("--quarantine-log", metavar="PATH", help="write the quarantined samples as JSON lines")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Imported here: torch and Ray Data are heavy, and `mm-ray predict -h` should not wait for them.
    from mm_ray.inference.predict import predict

    specs, overrides = split_overrides(args.shards)
    result = predict(
        args.checkpoint,
        specs,
        out=args.out,
        overrides=overrides,
        config_file=args.config,
        quarantine_log=args.quarantine_log,
        progress=PolledProgress,
    )
    print(format_summary("predict summary", result))
    write_json(args.json, result)
    return 0

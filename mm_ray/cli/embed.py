"""``mm-ray embed CHECKPOINT SHARDS... [key=value ...] [--out DIR] [--json PATH]``: per-modality embeddings of
a shard set, written as Parquet with Ray Data, and a cross-modal retrieval table.

    mm-ray embed runs/demo/train/late_concat runs/demo/shards/val-{000000..000003}.tar
    mm-ray embed runs/demo/train/late_concat_align "runs/demo/shards/val-*.tar" embed.gallery_size=100
    mm-ray embed CKPT s3://bucket/shards/val-{000..099}.tar --out /mnt/shared/embeddings embed.actors=4

The shards are preprocessed with the checkpoint's own settings and tokenizer (as ``mm-ray evaluate`` does);
the embedding actors take a GPU each where the cluster has GPUs (``embed.num_gpus``). The rows go to
``<out>/data`` (``--out`` defaults to ``<run dir>/embeddings``) with ``<out>/retrieval.json`` beside them;
the table shows recall@k of each sample's own pair and the class match of the top hit, each next to its
chance value. See
``mm_ray.retrieval``. Exit code 2 for a path that is not a checkpoint, a bad config key or no shards.
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
    p = sub.add_parser(
        "embed", help="write per-modality embeddings of a shard set and score cross-modal retrieval"
    )
    add_checkpoint_and_shards_args(p)
    p.add_argument("--out", metavar="DIR", help="where the Parquet rows go (default: <run dir>/embeddings)")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Imported here: torch and Ray Data are heavy, and `mm-ray embed -h` should not wait for them.
    from mm_ray.retrieval.embed import embed
    from mm_ray.retrieval.metrics import retrieval_table

    specs, overrides = split_overrides(args.shards)
    result = embed(
        args.checkpoint,
        specs,
        out_dir=args.out,
        overrides=overrides,
        config_file=args.config,
        progress=PolledProgress,
    )
    print(format_summary("embed summary", {k: v for k, v in result.items() if k != "retrieval"}))
    print("\ncross-modal retrieval (chance in brackets)")
    print(retrieval_table({result["preset"]: result["retrieval"]}))
    write_json(args.json, result)
    return 0

"""``mm-ray generate CHECKPOINT --from text --to image [--n N] [--out DIR] SHARDS... [key=value ...]``: generate
one modality from others for every sample of a shard set, with a Ray Data actor pool.

    mm-ray generate runs/gen/train/mvae --from text --to image --n 4 runs/gen/shards/val-000000.tar
    mm-ray generate runs/gen/train/mvae --from text,image --to audio --out runs/gen/audio "shards/val-*.tar"
    mm-ray generate CKPT --from text --to image --out s3://bucket/generated s3://bucket/val-{000..009}.tar

Needs a checkpoint of a generative preset (``mvae``: image or audio from any subset of its modalities;
``cgan``: image from text); any other is refused with exit code 2. Images are written as PNG, audio as a PNG
plot of the log-mel and a WAV made by Griffin-Lim, under ``--out`` (default ``<run dir>/generated``), which
may be a URI. See ``mm_ray.generation``. As a cluster job: ``mm-ray submit --address URL -- generate ...``.
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
from mm_ray.generation.targets import DEFAULT_SOURCES, TARGETS
from mm_ray.tables import format_summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate images (PNG) or audio (log-mel PNG + Griffin-Lim WAV) from another modality "
        "with an mvae or cgan checkpoint",
    )
    add_checkpoint_and_shards_args(p)
    p.add_argument(
        "--from",
        dest="sources",
        default=",".join(DEFAULT_SOURCES),
        help=f"comma-separated source modalities (default: {','.join(DEFAULT_SOURCES)})",
    )
    p.add_argument("--to", dest="target", choices=TARGETS, default=TARGETS[0], help="what to generate")
    p.add_argument("--n", type=int, default=1, help="draws per input sample (default: 1)")
    p.add_argument("--out", metavar="DIR", help="output directory or URI (default: <run dir>/generated)")
    p.add_argument("--actors", type=int, default=1, help="generator actors (a GPU each where there are GPUs)")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Imported here: torch and Ray Data are heavy, and `mm-ray generate -h` should not wait for them.
    from mm_ray.generation.run import generate

    specs, overrides = split_overrides(args.shards)
    result = generate(
        args.checkpoint,
        specs,
        sources=tuple(s.strip() for s in args.sources.split(",") if s.strip()),
        target=args.target,
        samples=args.n,
        out_dir=args.out,
        actors=args.actors,
        overrides=overrides,
        config_file=args.config,
        progress=PolledProgress,
    )
    print(format_summary("generate summary", result))
    write_json(args.json, result)
    return 0

"""``mm-ray preprocess SHARDS... --out DIR``: decode shards once into the model-ready Parquet cache.

Calls ``mm_ray.build_cache`` (``mm_ray.data.build``) and prints its summary (and ``--json PATH``).
"""

from __future__ import annotations

import argparse

from mm_ray.cli.common import PolledProgress, add_config_args, config_from_args, split_overrides, write_json
from mm_ray.data.build import build_cache
from mm_ray.tables import format_summary, format_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="decode shards once into a model-ready Parquet cache")
    p.add_argument(
        "shards", nargs="*", help="shard specs (dirs, globs, brace ranges, s3://...) and key=value overrides"
    )
    p.add_argument("--out", required=True, help="cache directory (or s3:// prefix) to write")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    specs, overrides = split_overrides(args.shards)
    cfg = config_from_args(args, overrides)
    specs = specs or cfg.data.shards
    if not specs:
        raise SystemExit("mm-ray preprocess: no shards given (pass SHARDS... or set data.shards)")
    cache = build_cache(cfg, specs, args.out, progress=PolledProgress)
    summary = {"out": cache.uri, "config_hash": cache.manifest.config_hash, **cache.manifest.ingest.to_dict()}
    print(format_summary("preprocess summary", summary))
    if cache.classes:
        counts = cache.manifest.label_counts or {}
        rows = [[name, str(i), str(counts.get(str(i), 0))] for i, name in enumerate(cache.classes)]
        print(f"\nlabel map: {len(cache.classes)} classes (saved in the manifest's preprocess.classes)")
        print(format_table(["class", "id", "samples"], rows))
    write_json(args.json, summary)
    return 0

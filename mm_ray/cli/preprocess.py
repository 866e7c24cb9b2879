"""``mm-ray preprocess SHARDS... --out DIR``: decode shards once into the model-ready Parquet cache.

Steps: expand the shard specs -> get a tokenizer (``text.tokenizer`` path, or train one on the
shards' captions) -> stream the shards through the per-modality actor pools -> write Parquet,
the quarantine log and the manifest -> print the summary (and ``--json PATH``).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from mm_ray.cli.common import add_config_args, config_from_args, split_overrides
from mm_ray.cli.progress import PolledProgress
from mm_ray.cli.report import format_summary, write_json
from mm_ray.config.schema import Config
from mm_ray.data.cache import cache_manifest, write_manifest
from mm_ray.data.captions import iter_captions
from mm_ray.data.pipeline import Ingest, member_map
from mm_ray.data.sources import expand_shards
from mm_ray.preprocess.tokenizer import load_tokenizer, train_tokenizer
from mm_ray.runtime import init_ray


def obtain_tokenizer(cfg: Config, shard_specs: list[str]) -> str:
    """The tokenizer as a JSON string: loaded from ``text.tokenizer`` or trained on the captions."""
    if cfg.text.tokenizer:
        return load_tokenizer(cfg.text.tokenizer).to_str()
    urls = expand_shards(shard_specs, storage_options=cfg.data.storage_options)
    captions = iter_captions(
        urls, member_map(cfg), cfg.data.storage_options, limit=cfg.text.tokenizer_train_samples
    )
    return train_tokenizer(captions, vocab_size=cfg.text.vocab_size).to_str()


def run_preprocess(
    cfg: Config,
    shard_specs: list[str],
    out_dir: str | Path,
    tokenizer_json: str | None = None,
    expected: int | None = None,
) -> dict[str, Any]:
    """Write the cache for ``shard_specs`` into ``out_dir``; returns the summary. Needs Ray running."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_json = tokenizer_json or obtain_tokenizer(cfg, shard_specs)
    (out / "tokenizer.json").write_text(tokenizer_json)
    ingest = Ingest.from_config(cfg, shard_specs, tokenizer_json)
    # Ray Data appends to an existing directory: a re-run (a second `mm-ray demo`) would double the cache.
    shutil.rmtree(out / "data", ignore_errors=True)
    with PolledProgress(f"preprocess {out.name}", lambda: ingest.summary()["samples_read"], total=expected):
        ingest.dataset.write_parquet(str(out / "data"), min_rows_per_file=2048)
    summary = ingest.finish(quarantine_log=out / "quarantine.jsonl")
    seconds = time.perf_counter() - start
    manifest = cache_manifest(cfg, summary, ingest.urls, tokenizer_json, seconds)
    write_manifest(out, manifest)
    summary.update(
        out=str(out),
        config_hash=manifest["config_hash"],
        seconds=round(seconds, 2),
        samples_per_s=round(summary["samples_read"] / seconds, 1),
    )
    return summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="decode shards once into a model-ready Parquet cache")
    p.add_argument(
        "shards", nargs="*", help="shard specs (dirs, globs, brace ranges, s3://...) and key=value overrides"
    )
    p.add_argument("--out", required=True, help="cache directory to write")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    specs, overrides = split_overrides(args.shards)
    cfg = config_from_args(args, overrides)
    specs = specs or cfg.data.shards
    if not specs:
        raise SystemExit("mm-ray preprocess: no shards given (pass SHARDS... or set data.shards)")
    init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory_mb)
    summary = run_preprocess(cfg, specs, args.out)
    print(format_summary("preprocess summary", summary))
    write_json(args.json, summary)
    return 0

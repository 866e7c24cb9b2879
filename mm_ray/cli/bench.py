"""``mm-ray bench ingest|memory|train``: the benchmarks (see ``mm_ray.bench.ingest`` and ``mm_ray.bench.train``).

mm-ray bench ingest                          # generates 4,000 demo samples into runs/bench/shards
mm-ray bench ingest --shards 'data/*.tar'    # your own shards
mm-ray bench ingest demo.num_samples=8000 --json bench.json
mm-ray bench train                           # the same shards, preprocessed once into runs/bench/train_cache
mm-ray bench train --cache DIR train.epochs=5 --json train.json --plot train.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mm_ray.bench import train as train_bench
from mm_ray.bench.ingest import LABELS, MODES, resolve_urls, run_in_subprocess
from mm_ray.cli.common import add_config_args, config_from_args, split_overrides
from mm_ray.cli.demo import demo_shards
from mm_ray.cli.preprocess import obtain_tokenizer
from mm_ray.cli.report import format_table, write_json
from mm_ray.config.schema import Config
from mm_ray.data.cache import MANIFEST, preprocess_config_hash, read_manifest
from mm_ray.demo.generate import shard_paths

BENCH_DEFAULTS = [
    "name=bench",
    "demo.num_samples=4000",
    "demo.samples_per_shard=500",
    "demo.val_fraction=0.0",
]

TRAIN_MODES = train_bench.MODES
TRAIN_DEFAULTS = [*BENCH_DEFAULTS, "image.size=48", "audio.n_mels=32"]
"""bench train's generated data: the ingest benchmark's shards, preprocessed small so epochs stay cheap."""


def results_table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        [LABELS[m], r["samples_per_s"], r["steady_samples_per_s"], r["first_batch_s"], r["peak_pss_mb"]]
        for m, r in results.items()
    ]
    return format_table(
        ["pipeline", "samples/s", "steady samples/s", "first batch (s)", "peak PSS (MB)"], rows
    )


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    a, b, c = (results[m] for m in MODES)
    return {
        "c/b": round(c["samples_per_s"] / b["samples_per_s"], 3),
        "c/a": round(c["samples_per_s"] / a["samples_per_s"], 3),
        "c/b steady": round(c["steady_samples_per_s"] / b["steady_samples_per_s"], 3),
    }


def bench_memory(args: argparse.Namespace, overrides: list[str], tokenizer: str, urls: list[str]) -> int:
    """The Ray pipeline over the shards once and ten times over (same shards repeated): peak memory ratio."""
    results = {}
    for scale in (1, 10):
        print(f"running the Ray pipeline over {scale}x the shards ...", flush=True)
        results[f"{scale}x"] = run_in_subprocess(
            "ray", args.config, overrides, tokenizer, urls, args.cores, scale
        )
    rows = [[k, r["samples"], r["samples_per_s"], r["peak_pss_mb"]] for k, r in results.items()]
    print(format_table(["data", "samples", "samples/s", "peak PSS (MB)"], rows))
    ratio = results["10x"]["peak_pss_mb"] / results["1x"]["peak_pss_mb"]
    print(
        f"memory ratio 10x/1x = {ratio:.2f} (streaming keeps it flat; 10.0 would mean memory grows with data)"
    )
    write_json(args.json, {"results": results, "memory_ratio_10x_1x": round(ratio, 3)})
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks: `bench ingest` (decode floor vs DataLoader vs Ray pipeline), "
        "`bench train` (plain PyTorch loop vs Ray Train with 1 and 2 workers)",
    )
    p.add_argument("target", choices=["ingest", "memory", "train"])
    p.add_argument("overrides", nargs="*", help="key=value overrides (demo.* sizes the generated data)")
    p.add_argument("--shards", nargs="+", help="benchmark these shards instead of generated demo data")
    p.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count(),
        help="processes / workers / Ray CPUs; train: the trainer's cores (default: all)",
    )
    p.add_argument(
        "--modes",
        help=f"comma-separated subset of {','.join(MODES)} (train: {','.join(TRAIN_MODES)}; default: all)",
    )
    p.add_argument("--cache", help="train: time this preprocessed cache instead of generated demo data")
    p.add_argument("--plot", metavar="PNG", help="train: also draw samples/s per mode into this PNG")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="train: run every mode this many times; report each one's median",
    )
    add_config_args(p)
    p.set_defaults(func=main)


def chosen_modes(spec: str | None, known: tuple[str, ...]) -> list[str]:
    modes = [m for m in (spec or ",".join(known)).split(",") if m]
    unknown = set(modes) - set(known)
    if unknown:
        raise SystemExit(
            f"mm-ray bench: unknown --modes {','.join(sorted(unknown))} (choose from {','.join(known)})"
        )
    return modes


def main(args: argparse.Namespace) -> int:
    # key=value words typed after --shards land in its list: move them back to the overrides.
    shard_specs, late_overrides = split_overrides(args.shards or [])
    rest, overrides = split_overrides(args.overrides)
    overrides += late_overrides
    if rest:
        raise SystemExit(f"mm-ray bench: not key=value: {' '.join(rest)}")
    if args.target == "train":
        return bench_train(args, shard_specs, overrides, chosen_modes(args.modes, TRAIN_MODES))
    modes = chosen_modes(args.modes, MODES)
    overrides = ([] if args.config else BENCH_DEFAULTS) + overrides
    cfg = config_from_args(args, overrides)
    if shard_specs:
        specs = shard_specs
    else:
        shard_dir = Path(cfg.output_dir) / cfg.name / "shards"
        demo_shards(cfg.demo, shard_dir)
        specs = [str(shard_dir)]
    urls = resolve_urls(cfg, specs)
    with tempfile.TemporaryDirectory() as tmp:
        tok = Path(tmp) / "tokenizer.json"
        tok.write_text(obtain_tokenizer(cfg, urls))
        if args.target == "memory":
            return bench_memory(args, overrides, str(tok), urls)
        results = {}
        for mode in modes:
            print(f"running {LABELS[mode]} ...", flush=True)
            results[mode] = run_in_subprocess(mode, args.config, overrides, str(tok), urls, args.cores)
    print(f"\ningest benchmark: {len(urls)} shards, {args.cores} cores")
    print(results_table(results))
    summary: dict[str, Any] = {"cores": args.cores, "shards": len(urls), "results": results}
    if set(MODES) <= set(results):
        summary["ratios"] = ratios(results)
        print("ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in summary["ratios"].items()))
    for mode, r in results.items():
        print(
            f"CPU seconds by process, {mode}: "
            + ", ".join(f"{g} {s:.1f}" for g, s in r["cpu_s_by_process"].items())
        )
    write_json(args.json, summary)
    return 0


def bench_train(
    args: argparse.Namespace, shard_specs: list[str], overrides: list[str], modes: list[str]
) -> int:
    """Plain PyTorch loop vs Ray Train with 1 and 2 workers on one preprocessed cache (``mm_ray.bench.train``)."""
    # Three epochs unless told otherwise: the first is start-up, the rest are the steady state.
    overrides = ["train.epochs=3", *([] if args.config else TRAIN_DEFAULTS), *overrides]
    cfg = config_from_args(args, overrides)
    cache = args.cache or bench_cache(args, cfg, shard_specs, overrides)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for round_ in range(args.repeat):
        # Rounds interleave the modes, so a burst of load from elsewhere does not hit one mode only.
        for mode in modes:
            of = f" (round {round_ + 1} of {args.repeat})" if args.repeat > 1 else ""
            print(f"running {train_bench.LABELS[mode]}{of} ...", flush=True)
            runs[mode].append(train_bench.run_in_subprocess(mode, args.config, overrides, cache, args.cores))
    results = {mode: train_bench.median_run(r) for mode, r in runs.items()}
    samples = next(iter(results.values()))["samples"] // max(1, cfg.train.epochs)
    print(
        f"\ntraining benchmark: {samples:,} samples x {cfg.train.epochs} epochs, model {cfg.model.preset} "
        f"(width {cfg.model.width}, depth {cfg.model.depth}), batch {cfg.train.batch_size}, {args.cores} cores"
    )
    print(train_table(results, args.cores))
    summary: dict[str, Any] = {"cores": args.cores, "cache": str(cache), "results": results}
    if "plain" in results and len(results) > 1:
        summary["ratios"] = train_bench.ratios(results)
        print("ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in summary["ratios"].items()))
        if "ray1/plain steady" in summary["ratios"]:
            ratio = summary["ratios"]["ray1/plain steady"]
            verdict = "met" if ratio >= train_bench.TARGET else "missed"
            print(f"target ray1/plain steady >= {train_bench.TARGET}: {verdict} ({ratio:.2f})")
    for mode, r in results.items():
        print(
            f"CPU seconds by process, {mode}: "
            + ", ".join(f"{g} {s:.1f}" for g, s in r["cpu_s_by_process"].items())
        )
    if args.plot:
        print(f"chart: {train_bench.plot_train(results, args.plot)}")
    write_json(args.json, summary)
    return 0


def train_table(results: dict[str, dict[str, Any]], cores: int) -> str:
    rows = [
        [
            train_bench.LABELS[m],
            f"{train_bench.WORKERS[m]} x {cores / train_bench.WORKERS[m]:g}",
            r["torch_threads"],
            r["steady_samples_per_s"],
            r["samples_per_s"],
            r["startup_s"],
            r["epoch_seconds"],
            r["peak_pss_mb"],
        ]
        for m, r in results.items()
    ]
    headers = ["mode", "workers x CPUs", "torch threads", "steady samples/s", "end-to-end samples/s"]
    return format_table([*headers, "start-up (s)", "epoch seconds", "peak PSS (MB)"], rows)


def bench_cache(args: argparse.Namespace, cfg: Config, shard_specs: list[str], overrides: list[str]) -> Path:
    """The cache to time: the shards (generated demo ones by default) preprocessed once, then reused."""
    if shard_specs:
        specs = shard_specs
    else:
        shard_dir = Path(cfg.output_dir) / cfg.name / "shards"
        demo_shards(cfg.demo, shard_dir)
        specs = shard_paths(shard_dir, "train")
    urls = resolve_urls(cfg, specs)
    cache = Path(cfg.output_dir) / cfg.name / "train_cache"
    if cache_is_current(cache, cfg, urls):
        print(f"reusing the preprocessed cache in {cache}")
        return cache
    shutil.rmtree(cache, ignore_errors=True)  # a stale cache's Parquet files would mix with the new ones
    print(f"preprocessing {len(urls)} shards into {cache} ...", flush=True)
    # In its own process: the benchmark's modes must each start with no Ray running.
    command = [sys.executable, "-m", "mm_ray.cli.main", "preprocess", *urls, "--out", str(cache)]
    config = ["--config", args.config] if args.config else []
    subprocess.run([*command, *config, *overrides, f"ray.num_cpus={args.cores}"], check=True)
    return cache


def cache_is_current(cache: Path, cfg: Config, urls: list[str]) -> bool:
    """True when ``cache`` was made from ``urls`` (not rewritten since) with ``cfg``'s preprocessing."""
    try:
        manifest = read_manifest(cache)
        tokenizer_json = (cache / manifest["tokenizer"]).read_text()
    except (FileNotFoundError, KeyError):
        return False
    written = (cache / MANIFEST).stat().st_mtime
    local = [u for u in urls if "://" not in u]
    return (
        manifest.get("config_hash") == preprocess_config_hash(cfg, tokenizer_json)
        and sorted(manifest.get("shards", [])) == sorted(urls)
        and all(os.path.getmtime(u) <= written for u in local)
    )

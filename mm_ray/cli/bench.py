"""``mm-ray bench ingest``: the ingest benchmark (see ``mm_ray.bench.ingest``).

mm-ray bench ingest                          # generates 4,000 demo samples into runs/bench/shards
mm-ray bench ingest --shards 'data/*.tar'    # your own shards
mm-ray bench ingest demo.num_samples=8000 --json bench.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from mm_ray.bench.ingest import LABELS, MODES, resolve_urls, run_in_subprocess
from mm_ray.cli.common import add_config_args, config_from_args, split_overrides
from mm_ray.cli.demo import demo_shards
from mm_ray.cli.preprocess import obtain_tokenizer
from mm_ray.cli.report import format_table, write_json

BENCH_DEFAULTS = [
    "name=bench",
    "demo.num_samples=4000",
    "demo.samples_per_shard=500",
    "demo.val_fraction=0.0",
]


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
        "bench", help="benchmarks: `bench ingest` (decode floor vs DataLoader vs Ray pipeline)"
    )
    p.add_argument("target", choices=["ingest", "memory"])
    p.add_argument("overrides", nargs="*", help="key=value overrides (demo.* sizes the generated data)")
    p.add_argument("--shards", nargs="+", help="benchmark these shards instead of generated demo data")
    p.add_argument(
        "--cores", type=int, default=os.cpu_count(), help="processes / workers / Ray CPUs (default: all)"
    )
    p.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)} (default: all)"
    )
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # key=value words typed after --shards land in its list: move them back to the overrides.
    shard_specs, late_overrides = split_overrides(args.shards or [])
    rest, overrides = split_overrides(args.overrides)
    overrides += late_overrides
    if rest:
        raise SystemExit(f"mm-ray bench: not key=value: {' '.join(rest)}")
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(
            f"mm-ray bench: unknown --modes {','.join(sorted(unknown))} (choose from {','.join(MODES)})"
        )
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

"""``mm-ray bench ingest|memory|train|hostile``: the benchmarks (``mm_ray.bench``), each against a baseline measured
in the same run, printed as a table with ratios (and ``--json``).

    mm-ray bench ingest                          # generates 4,000 demo samples into runs/bench/shards
    mm-ray bench ingest --shards 'data/*.tar'    # your own shards
    mm-ray bench ingest demo.num_samples=8000 --json bench.json
    mm-ray bench train                           # the same shards, preprocessed once into runs/bench/train_cache
    mm-ray bench train --cache DIR train.epochs=5 --json train.json --plot train.png
    mm-ray bench stream-memory                   # streaming training over 2,000 and 20,000 samples: peak memory
    mm-ray bench hostile                         # 2 GiB gzip, bz2 and xz bombs and giant captions: time and peak memory
    mm-ray bench generate --config pipelines/generate.yaml   # mvae / cgan: topic of images drawn from text
    mm-ray bench generate --config pipelines/generate.yaml --modes cgan   # the reader and cgan only
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from mm_ray.bench import hostile as hostile_bench
from mm_ray.bench import ingest as ingest_bench
from mm_ray.bench import runner
from mm_ray.bench import train as train_bench
from mm_ray.bench.records import IngestBench, IngestRun, StreamMemoryBench, TrainBench, TrainRun
from mm_ray.cli.common import add_config_args, config_from_args, split_overrides, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks: `bench ingest` (decode floor vs DataLoader vs Ray pipeline), `bench memory` "
        "(1x vs 10x data), `bench stream-memory` (streaming training over 1x vs 10x data: peak memory), `bench train` (plain PyTorch loop vs Ray Train with 1 and 2 workers; `--source shards`: a DataLoader loop vs streaming; `--modes`: the large-run options), `bench hostile` "
        "(time and peak memory of preprocess on gzip, bz2 and xz bombs and giant captions, vs the same shard without), "
        "`bench generate` (mvae and cgan images drawn from text: topic recovered vs chance and real images, "
        "diversity), `bench predict` (mm_ray predict vs a webdataset + DataLoader loop, same model; its memory "
        "at 1x and --scale x the shards), `bench serve` (mm-ray serve under a bounded loopback load: requests/s, "
        "p50/p99 latency)",
    )
    p.add_argument(
        "target",
        choices=["ingest", "memory", "stream-memory", "train", "hostile", "generate", "predict", "serve"],
    )
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
        help=f"comma-separated subset of {','.join(ingest_bench.MODES)} "
        f"(train: {','.join(train_bench.MODES)}, or pairs of {','.join(train_bench.LARGE_MODES)}; "
        f"train --source shards: {','.join(train_bench.SHARD_MODES)}; "
        "generate: a subset of mvae,cgan; default: all)",
    )
    p.add_argument("--cache", help="train: time this preprocessed cache instead of generated demo data")
    p.add_argument(
        "--source",
        choices=["cache", "shards"],
        default="cache",
        help="train: cache = plain loop vs Ray Train on one preprocessed cache; shards = webdataset + "
        "DataLoader loop vs mm_ray streaming from the shards (and mm_ray on their cache)",
    )
    p.add_argument(
        "--bomb-gib",
        type=float,
        default=2.0,
        help="hostile: what each bomb (gzip, bz2, xz) inflates to (GiB)",
    )
    p.add_argument(
        "--plot",
        metavar="PNG",
        help="train: also draw samples/s per mode into this PNG; generate: where the grid of generated "
        "images goes (default: <output_dir>/<name>/generation_grid.png)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="train, ingest: run every mode this many times, interleaved; report each one's median (ingest: and "
        "the median of each round's ratios)",
    )
    p.add_argument(
        "--scale",
        type=int,
        default=10,
        help="stream-memory, predict: the larger run reads the shards this many times (predict: 1 = no memory runs)",
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
    if args.target == "generate":
        return bench_generate(args, overrides)
    if args.target == "predict":
        return bench_predict(args, overrides, shard_specs)
    if args.target == "serve":
        return bench_serve(args, overrides, shard_specs)
    common = {
        "config_path": args.config,
        "overrides": overrides,
        "shard_specs": shard_specs,
        "cores": args.cores,
    }
    known = default = ingest_bench.MODES
    if args.target == "hostile":
        known = default = hostile_bench.CASES
    elif args.target == "train" and args.source == "shards":
        known = default = train_bench.SHARD_MODES
    elif args.target == "train":
        # The large-run modes are pairs asked for by name (--modes eager,compiled): by default the three baselines.
        known, default = (*train_bench.MODES, *train_bench.LARGE_MODES), train_bench.MODES
    try:
        modes = runner.chosen_modes(args.modes, known, default)
    except ValueError as err:
        raise SystemExit(f"mm-ray bench: {err}") from None
    if args.target == "hostile":
        cases = hostile_bench.bench_hostile(modes, overrides, gib=args.bomb_gib)
        print(hostile_bench.hostile_table(cases))
        write_json(args.json, {case: c.to_dict() for case, c in cases.items()})
        return 0
    if args.target == "train":
        summary = runner.bench_train(
            **common, modes=modes, cache=args.cache, repeat=args.repeat, source=args.source
        )
        print_train(summary, args.plot)
    elif args.target == "stream-memory":
        summary = runner.bench_stream_memory(**common, scale=args.scale)
        print_stream_memory(summary)
    elif args.target == "memory":
        summary = runner.bench_memory(**common)
        print(runner.memory_table(summary.results))
        print(
            f"memory ratio 10x/1x = {summary.memory_ratio_10x_1x:.2f} "
            "(streaming keeps it flat; 10.0 would mean memory grows with data)"
        )
    else:
        summary = runner.bench_ingest(**common, modes=modes, repeat=args.repeat)
        print_ingest(summary)
    write_json(args.json, summary.to_dict())
    return 0


def print_ingest(summary: IngestBench) -> None:
    print(f"\ningest benchmark: {summary.shards} shards, {summary.cores} cores")
    rounds = summary.runs_by_round or ()
    if len(rounds) > 1:
        for i, runs in enumerate(rounds, 1):
            print(f"round {i} of {len(rounds)}\n" + runner.ingest_table(runs))
        print("median run of each mode")
    print(runner.ingest_table(summary.results))
    if summary.ratios is not None:
        of = f"median of {summary.rounds} rounds, " if summary.rounds > 1 else ""
        print(
            f"ratios ({of}a = decode floor, b = DataLoader, c = mm_ray, d = Ray Data floor): "
            + ", ".join(f"{k} = {v:.2f}" for k, v in summary.ratios.items())
        )
        if summary.rounds > 1:
            for i, r in enumerate(summary.ratios_by_round or (), 1):
                print(f"  round {i}: " + ", ".join(f"{k} = {v:.2f}" for k, v in r.items()))
    print_cpu(summary.results)
    for mode, r in summary.results.items():
        if r.threads is not None:
            t = r.threads
            pools = ", ".join(
                f"{p.get('internal_api', p.get('user_api'))} {p['num_threads']}" for p in t.threadpools
            )
            print(
                f"threads in a {mode} actor ({t.cpus:g} CPU): torch {t.torch_threads}, pyarrow {t.pyarrow_cpus}, "
                f"{pools or 'no BLAS/OpenMP pool'}; {t.os_threads} OS threads"
            )


def print_stream_memory(summary: StreamMemoryBench) -> None:
    print(runner.stream_memory_table(summary.results))
    verdict = "met" if summary.memory_ratio <= summary.target else "missed"
    print(
        f"peak PSS ratio {summary.scale}x/1x = {summary.memory_ratio:.2f} (target <= {summary.target}: "
        f"{verdict}); summed RSS ratio {summary.rss_ratio:.2f}"
    )
    for scale, r in summary.results.items():
        top = ", ".join(f"{g} {mb:g}" for g, mb in list(r.peak_pss_mb_by_group.items())[:6])
        print(f"peak PSS by process group (MB), {scale}: {top}")


def bench_generate(args: argparse.Namespace, overrides: list[str]) -> int:
    # Imported here: torch is heavy, and the other benchmarks run their models in subprocesses.
    from mm_ray.bench.generation import MODELS, bench_generation, generation_table

    cfg = config_from_args(args, overrides)
    try:
        presets = tuple(runner.chosen_modes(args.modes, tuple(MODELS)))
    except ValueError as err:
        raise SystemExit(f"mm-ray bench: {err}") from None
    summary = bench_generation(cfg, Path(cfg.output_dir) / cfg.name, presets=presets, grid_path=args.plot)
    print(
        f"\ncross-modal generation (text -> image), {summary.topics} topics: topic read back from the images"
    )
    print(generation_table(summary.rows))
    for name, trained in summary.train.items():
        print(f"trained {name}: {trained.epochs} epochs, {trained.seconds} s")
    print(f"grid ({summary.grid_rows}): {summary.grid}")
    write_json(args.json, summary.to_dict())
    return 0


def print_train(summary: TrainBench, plot: str | None) -> None:
    results = summary.results
    samples = next(iter(results.values())).samples // max(1, summary.epochs)
    model = summary.model
    print(
        f"\ntraining benchmark: {samples:,} samples x {summary.epochs} epochs, model {model.preset} "
        f"(width {model.width}, depth {model.depth}), batch {summary.batch_size}, {summary.cores} cores"
    )
    rounds = summary.runs_by_round or ()
    for i, runs in enumerate(rounds, 1):
        print(f"round {i} of {len(rounds)}\n" + runner.train_table(runs, summary.cores))
        if summary.ratios_by_round:
            print(
                "  ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in summary.ratios_by_round[i - 1].items())
            )
    if rounds:
        print("median run of each mode")
    print(runner.train_table(results, summary.cores))
    ratios = summary.ratios or {}
    if ratios:
        print("ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
    target = "stream1/loader steady" if summary.source == "shards" else "ray1/plain steady"
    if target in ratios:
        verdict = "met" if ratios[target] >= train_bench.TARGET else "missed"
        print(f"target {target} >= {train_bench.TARGET}: {verdict} ({ratios[target]:.2f})")
    for i, by_round in enumerate(summary.large_ratios_by_round or () if summary.rounds > 1 else ()):
        print(f"  round {i + 1}: " + ", ".join(f"{k} = {v:.3f}" for k, v in by_round.items()))
    for mode, r in results.items():
        if r.step_checkpoint_share is not None:
            print(
                f"{mode}: {r.step_checkpoints} step checkpoints in epochs >= 2, {r.step_checkpoint_s:.3f} s "
                f"each, {r.step_checkpoint_share:.2%} of those epochs' time (timed in the worker)"
            )
    for name, (sign, goal) in train_bench.LARGE_TARGETS.items():
        if name in ratios:
            met = ratios[name] <= goal if sign == "<=" else ratios[name] >= goal
            print(f"target {name} {sign} {goal}: {'met' if met else 'missed'} ({ratios[name]:.3f})")
    startup = runner.startup_table(results)
    if startup:
        print("\nstart-up of the Ray modes (from the mode's start, after imports)\n" + startup)
    print_cpu(results)
    if plot:
        print(f"chart: {train_bench.plot_train(results, plot)}")


def print_cpu(results: Mapping[str, IngestRun | TrainRun]) -> None:
    for mode, r in results.items():
        if r.cpu_s_split:
            print(
                f"CPU seconds by process, {mode} (start-up + steady): "
                + ", ".join(f"{g} {s.startup:.1f} + {s.steady:.1f}" for g, s in r.cpu_s_split.items())
            )
        else:
            print(
                f"CPU seconds by process, {mode}: "
                + ", ".join(f"{g} {s:.1f}" for g, s in r.cpu_s_by_process.items())
            )


def bench_predict(args: argparse.Namespace, overrides: list[str], shard_specs: list[str]) -> int:
    from mm_ray.bench import predict as predict_bench

    overrides = [*([] if args.config else predict_bench.DEFAULTS), *overrides]
    cfg = runner.load_config(args.config, overrides)
    urls = runner._shard_urls(cfg, shard_specs)
    summary = predict_bench.bench_predict(
        cfg=cfg,
        urls=urls,
        cores=args.cores,
        repeat=args.repeat,
        scale=args.scale,
        copies=2,
        overrides=overrides,
    )
    print(f"\npredict benchmark: {summary.samples} samples ({len(urls)} shards x 2), {summary.cores} cores")
    print(predict_bench.predict_table(summary))
    verdict = "met" if summary.ratio >= summary.target else "missed"
    print(
        f"mm_ray / dataloader = {summary.ratio:.2f} (median of {len(summary.rounds)} rounds: "
        + ", ".join(f"{r:.2f}" for r in summary.ratios_by_round)
        + f"; target >= {summary.target}: {verdict})"
    )
    if summary.memory_ratio is not None:
        verdict = "met" if summary.memory_ratio <= summary.memory_target else "missed"
        print(
            f"peak PSS {args.scale}x/1x = {summary.memory_ratio:.2f} (target <= {summary.memory_target}: {verdict})"
        )
    for i, runs in enumerate(summary.rounds, 1):
        for mode, run in runs.items():
            top = ", ".join(
                f"{k} {v}" for k, v in sorted(run.cpu_s_by_group.items(), key=lambda kv: -kv[1])[:6]
            )
            print(f"  CPU s, round {i} {mode}: {top}")
    write_json(args.json, summary.to_dict())
    return 0


def bench_serve(args: argparse.Namespace, overrides: list[str], shard_specs: list[str]) -> int:
    from mm_ray.bench.predict import DEFAULTS
    from mm_ray.bench.serve import bench_serve as run
    from mm_ray.tables import format_table

    cfg = runner.load_config(args.config, [*([] if args.config else DEFAULTS), *overrides])
    summary = run(cfg=cfg, urls=runner._shard_urls(cfg, shard_specs)[:1], cores=args.cores)
    print(
        f"\nserve benchmark: {summary.clients} clients on loopback, {summary.replicas} replica, {args.cores} cores"
    )
    fields = [
        "requests",
        "seconds",
        "requests_per_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "errors",
        "max_batch_size",
    ]
    print(format_table(fields, [[getattr(summary, f) for f in fields]]))
    write_json(args.json, summary.to_dict())
    return 0

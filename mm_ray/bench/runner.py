"""The benchmarks as library calls: each prepares its data, runs every mode in a fresh subprocess and returns
the results with their ratios (typed records, ``mm_ray.bench.records``); ``mm-ray bench`` prints them.

    summary = bench_ingest(config_path=None, overrides=[], shard_specs=[], cores=2)      # (a), (b), (c)
    summary = bench_memory(config_path=None, overrides=[], shard_specs=[], cores=2)      # 1x vs 10x data
    summary = bench_train(config_path=None, overrides=[], shard_specs=[], cores=2)       # plain vs Ray Train
    summary = bench_stream_memory(config_path=None, overrides=[], shard_specs=[], cores=2)  # streaming, 1x vs 10x
    summary.results["ray"].steady_samples_per_s, summary.ratios, summary.to_dict()      # --json writes the last

Without shard specs the demo benchmark's shards are generated once into ``<output_dir>/<name>/shards``
(``BENCH_DEFAULTS``: 4,000 samples in 8 shards) and reused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import statistics
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from mm_ray.bench import ingest as ingest_bench
from mm_ray.bench import stream_memory as stream_memory_bench
from mm_ray.bench import train as train_bench
from mm_ray.bench.measure import median_run, run_spec
from mm_ray.bench.records import (
    BenchModel,
    IngestBench,
    IngestRun,
    MemoryBench,
    StreamMemoryBench,
    StreamMemoryRun,
    TrainBench,
    TrainRun,
)
from mm_ray.config.load import load_config
from mm_ray.config.schema import Config
from mm_ray.data.cache import MANIFEST, Cache, CacheError
from mm_ray.data.captions import obtain_tokenizer
from mm_ray.demo.dataset import reuse_or_write, shard_paths
from mm_ray.tables import format_table

logger = logging.getLogger(__name__)

BENCH_DEFAULTS = (
    "name=bench",
    "demo.num_samples=4000",
    "demo.samples_per_shard=500",
    "demo.val_fraction=0.0",
)
TRAIN_DEFAULTS = (*BENCH_DEFAULTS, "image.size=48", "audio.n_mels=32")
"""bench train's generated data: the ingest benchmark's shards, preprocessed small so epochs stay cheap."""


def chosen_modes(spec: str | None, known: Sequence[str], default: Sequence[str] | None = None) -> list[str]:
    """The modes of a comma-separated ``--modes`` value (``default`` when None, else all ``known``);
    ``ValueError`` naming unknown ones."""
    modes = [m for m in (spec or ",".join(default or known)).split(",") if m]
    unknown = set(modes) - set(known)
    if unknown:
        raise ValueError(f"unknown --modes {','.join(sorted(unknown))} (choose from {','.join(known)})")
    return modes


def _shard_urls(cfg: Config, shard_specs: Sequence[str], split: str | None = None) -> list[str]:
    """``shard_specs`` resolved, or else the demo shards ``cfg.demo`` describes (``split``'s, or every split's):
    the manifest's list, not the directory, which may still hold shards of an earlier, larger generation."""
    if shard_specs:
        specs = list(shard_specs)
    else:
        shard_dir = Path(cfg.output_dir) / cfg.name / "shards"
        manifest = reuse_or_write(cfg.demo, shard_dir)
        specs = [
            path for s in ([split] if split else manifest["shards"]) for path in shard_paths(shard_dir, s)
        ]
    return ingest_bench.resolve_urls(cfg, specs)


@contextlib.contextmanager
def tokenizer_file(cfg: Config, urls: list[str]) -> Iterator[Path]:
    """The run's tokenizer (trained once on the shards' captions) as a temporary ``tokenizer.json`` that
    every mode's subprocess loads, so all of them tokenize with the same vocabulary."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(obtain_tokenizer(cfg, urls))
        yield path


def bench_ingest(
    *,
    config_path: str | None,
    overrides: Sequence[str],
    shard_specs: Sequence[str],
    cores: int,
    modes: Sequence[str] = ingest_bench.MODES,
    repeat: int = 1,
) -> IngestBench:
    """(a) decode floor, (b) webdataset + DataLoader, (c) the mm_ray pipeline, (d) the simplest Ray Data pipeline
    with the same decoders, on the same shards.

    ``repeat`` > 1 runs the modes that many rounds, in the given order and then reversed, alternately, so that
    neither pipeline always runs first; each round's ratios compare runs made back to back, and the summary
    reports their median (``ratios``) beside every round's (``ratios_by_round``). The table shows, per mode,
    the run with the median steady rate; ``runs_by_round`` keeps every run.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    overrides = [*([] if config_path else BENCH_DEFAULTS), *overrides]
    cfg = load_config(config_path, overrides)
    urls = _shard_urls(cfg, shard_specs)
    runs: dict[str, list[IngestRun]] = {mode: [] for mode in modes}
    with tokenizer_file(cfg, urls) as tok:
        for round_ in range(repeat):
            # On a shared machine the speed drifts over minutes: pairs run back to back, in alternating order.
            for mode in modes if round_ % 2 == 0 else list(reversed(modes)):
                of = f" (round {round_ + 1} of {repeat})" if repeat > 1 else ""
                logger.info("running %s%s ...", ingest_bench.LABELS[mode], of)
                runs[mode].append(
                    ingest_bench.run_in_subprocess(mode, config_path, overrides, str(tok), urls, cores)
                )
    results = {mode: median_run(r) for mode, r in runs.items()}
    by_round = [ingest_ratios({mode: r[i] for mode, r in runs.items()}) for i in range(repeat)]
    if not by_round[0]:  # no pair of modes to compare
        return IngestBench(cores=cores, shards=len(urls), rounds=repeat, results=results)  # one mode only
    # A steady ratio is missing from a round too short to have a steady window: the median of the rounds with one.
    keys = dict.fromkeys(k for r in by_round for k in r)
    ratios = {k: round(statistics.median(r[k] for r in by_round if k in r), 3) for k in keys}
    rounds = tuple({mode: r[i] for mode, r in runs.items()} for i in range(repeat))
    return IngestBench(
        cores,
        len(urls),
        repeat,
        results,
        ratios=ratios,
        ratios_by_round=tuple(by_round),
        runs_by_round=rounds,
    )


def ingest_ratios(results: Mapping[str, IngestRun]) -> dict[str, float]:
    """mm_ray (c) over the DataLoader (b), over the Ray Data floor (d: what mm_ray adds to Ray Data) and over the
    decode floor (a), and (d) over (b) (what Ray Data costs), for the modes that ran: end to end, steady, and
    the first batch's wait (lower is better)."""
    out: dict[str, float] = {}
    pairs = (("c/b", "ray", "dataloader"), ("c/d", "ray", "raydata"), ("d/b", "raydata", "dataloader"))
    for name, top, bottom in pairs:
        x, y = results.get(top), results.get(bottom)
        if x is None or y is None:
            continue
        out[name] = round(x.samples_per_s / y.samples_per_s, 3)
        if x.steady_samples_per_s > 0 and y.steady_samples_per_s > 0:  # a run too short has no steady window
            out[f"{name} steady"] = round(x.steady_samples_per_s / y.steady_samples_per_s, 3)
        out[f"first batch {name}"] = round(x.first_batch_s / max(y.first_batch_s, 1e-3), 3)
    c, a = results.get("ray"), results.get("floor")
    if c is not None and a is not None:
        out["c/a"] = round(c.samples_per_s / a.samples_per_s, 3)
    return out


def ingest_table(results: Mapping[str, IngestRun]) -> str:
    rows = [
        [ingest_bench.LABELS[m], r.samples_per_s, r.steady_samples_per_s, r.first_batch_s, r.peak_pss_mb]
        for m, r in results.items()
    ]
    return format_table(
        ["pipeline", "samples/s", "steady samples/s", "first batch (s)", "peak PSS (MB)"], rows
    )


def bench_memory(
    *, config_path: str | None, overrides: Sequence[str], shard_specs: Sequence[str], cores: int
) -> MemoryBench:
    """The Ray pipeline over the shards once and ten times over (same shards repeated): peak memory ratio."""
    overrides = [*([] if config_path else BENCH_DEFAULTS), *overrides]
    cfg = load_config(config_path, overrides)
    urls = _shard_urls(cfg, shard_specs)
    results = {}
    with tokenizer_file(cfg, urls) as tok:
        for scale in (1, 10):
            logger.info("running the Ray pipeline over %dx the shards ...", scale)
            results[f"{scale}x"] = ingest_bench.run_in_subprocess(
                "ray", config_path, overrides, str(tok), urls, cores, scale
            )
    ratio = results["10x"].peak_pss_mb / results["1x"].peak_pss_mb
    return MemoryBench(results=results, memory_ratio_10x_1x=round(ratio, 3))


def memory_table(results: Mapping[str, IngestRun]) -> str:
    rows = [[k, r.samples, r.samples_per_s, r.peak_pss_mb] for k, r in results.items()]
    return format_table(["data", "samples", "samples/s", "peak PSS (MB)"], rows)


STREAM_MEMORY_DEFAULTS = (
    "name=bench-stream",
    "demo.num_samples=2000",
    "demo.samples_per_shard=250",
    "demo.val_fraction=0.0",
    "demo.min_image_px=96",
    "demo.max_image_px=192",
    "image.size=32",
    "audio.n_mels=32",
    "model.width=8",
    "model.depth=1",
    "model.fusion_dim=8",
    "model.num_classes=4",
    "train.cpus_per_worker=1",
    "pools.fused.num_cpus=0.5",
)
"""bench stream-memory's generated data and run: 2,000 small demo samples (8 shards), a tiny model, one worker
and two decoding actors sharing 2 cores."""


def bench_stream_memory(
    *,
    config_path: str | None,
    overrides: Sequence[str],
    shard_specs: Sequence[str],
    cores: int,
    scale: int = 10,
) -> StreamMemoryBench:
    """Streaming training over the shards once and ``scale`` times over (``mm_ray.bench.stream_memory``):
    peak memory of each and their ratio."""
    overrides = [*([] if config_path else STREAM_MEMORY_DEFAULTS), *overrides]
    cfg = load_config(config_path, overrides)
    urls = _shard_urls(cfg, shard_specs, split=None if shard_specs else "train")
    results: dict[str, StreamMemoryRun] = {}
    with tokenizer_file(cfg, urls) as tok, tempfile.TemporaryDirectory() as links:
        # One tokenizer for both runs (trained once, not again on the 10x list of the same captions).
        run_overrides = [*overrides, f"text.tokenizer={tok}"]
        for times in (1, scale):
            shards = urls if times == 1 else stream_memory_bench.repeated_shards(urls, times, Path(links))
            logger.info("training from %dx the shards (%d shard files) ...", times, len(shards))
            results[f"{times}x"] = stream_memory_bench.run_in_subprocess(
                config_path, run_overrides, shards, cores
            )
    one, many = results["1x"], results[f"{scale}x"]
    return StreamMemoryBench(
        cores=cores,
        scale=scale,
        results=results,
        memory_ratio=round(many.peak_pss_mb / one.peak_pss_mb, 3),
        rss_ratio=round(many.peak_rss_mb / one.peak_rss_mb, 3),
        target=stream_memory_bench.TARGET,
    )


def stream_memory_table(results: Mapping[str, StreamMemoryRun]) -> str:
    rows = [
        [
            k,
            r.samples,
            r.samples_per_s,
            r.seconds,
            r.peak_pss_mb,
            r.peak_rss_mb,
            f"{r.largest_process.group} {r.largest_process.pss_mb}",
        ]
        for k, r in results.items()
    ]
    headers = ["data", "samples", "train samples/s", "seconds", "peak PSS (MB)", "peak RSS sum (MB)"]
    return format_table([*headers, "largest process (PSS MB)"], rows)


def bench_train(
    *,
    config_path: str | None,
    overrides: Sequence[str],
    shard_specs: Sequence[str],
    cores: int,
    modes: Sequence[str] | None = None,
    cache: str | None = None,
    repeat: int = 1,
    source: str = "cache",
) -> TrainBench:
    """Plain PyTorch loop vs Ray Train (``mm_ray.bench.train``): with ``source="cache"`` on one preprocessed
    cache (1 and 2 workers); with ``source="shards"`` the webdataset + DataLoader loop vs ``fit`` streaming
    from the same shards, and ``fit`` on their cache beside them."""
    # Three epochs unless told otherwise: the first is start-up, the rest are the steady state.
    overrides = ["train.epochs=3", *([] if config_path else TRAIN_DEFAULTS), *overrides]
    cfg = load_config(config_path, overrides)
    modes = list(modes or (train_bench.SHARD_MODES if source == "shards" else train_bench.MODES))
    shards = _shard_urls(cfg, shard_specs, split="train") if source == "shards" else []
    cache = cache or str(bench_cache(cfg, config_path, overrides, shard_specs, cores))
    runs: dict[str, list[TrainRun]] = {mode: [] for mode in modes}
    for round_ in range(repeat):
        # Rounds interleave the modes, so a burst of load from elsewhere does not hit one mode only.
        for mode in modes:
            of = f" (round {round_ + 1} of {repeat})" if repeat > 1 else ""
            logger.info("running %s%s ...", train_bench.LABELS[mode], of)
            runs[mode].append(
                train_bench.run_in_subprocess(mode, config_path, overrides, cache, cores, shards)
            )
    results = {mode: median_run(r) for mode, r in runs.items()}
    baseline = train_bench.BASELINE[source]
    ratios = train_bench.ratios(results, baseline) if baseline in results and len(results) > 1 else {}
    rounds = tuple({m: r[i] for m, r in runs.items()} for i in range(repeat))
    base_by_round = (
        [train_bench.ratios(r, baseline) for r in rounds] if baseline in runs and len(runs) > 1 else []
    )
    # The large-run options: the ratio of each round's pair, then their median (paired rounds).
    by_round = [train_bench.large_ratios({m: r[i] for m, r in runs.items()}) for i in range(repeat)]
    if by_round and by_round[0]:
        ratios.update({k: statistics.median(r[k] for r in by_round) for k in by_round[0]})
    return TrainBench(
        cores=cores,
        source=source,
        cache=cache,
        shards=len(shards) or None,
        epochs=cfg.train.epochs,
        model=BenchModel(cfg.model.preset, cfg.model.width, cfg.model.depth),
        batch_size=cfg.train.batch_size,
        results=results,
        ratios=ratios or None,
        rounds=repeat,
        large_ratios_by_round=tuple(by_round) if by_round and by_round[0] else None,
        runs_by_round=rounds if repeat > 1 else None,
        ratios_by_round=tuple(base_by_round) if repeat > 1 and base_by_round else None,
    )


def train_table(results: Mapping[str, TrainRun], cores: int) -> str:
    rows = [
        [
            train_bench.LABELS[m],
            f"{train_bench.WORKERS[m]} x {1 if m in train_bench.VALIDATION_MODES else cores / train_bench.WORKERS[m]:g}",
            r.torch_threads,
            r.steady_samples_per_s,
            r.samples_per_s,
            r.startup_s,
            list(r.epoch_startup_s or ()),
            list(r.epoch_seconds),
            "not sampled" if r.peak_pss_mb is None else r.peak_pss_mb,
        ]
        for m, r in results.items()
    ]
    headers = ["mode", "workers x CPUs", "torch threads", "steady samples/s", "end-to-end samples/s"]
    headers = [
        *headers,
        "start-up (s)",
        "wait for each epoch's first batch (s)",
        "epoch seconds",
        "peak PSS (MB)",
    ]
    if any(r.steady_val_seconds is not None for r in results.values()):
        headers += ["validation s (epochs >= 2)", "validation CPU s, slowest worker"]
        for row, r in zip(rows, results.values(), strict=True):
            row += [r.steady_val_seconds or "", r.steady_val_cpu_seconds or ""]
    return format_table(headers, rows)


def startup_table(results: Mapping[str, TrainRun]) -> str:
    """Where each Ray mode's start-up went: Ray and the Train worker group, then the first batch."""
    rows = [
        [train_bench.LABELS[m], r.ray_start_s, p.to_worker_s, p.worker_to_first_batch_s, r.startup_s]
        for m, r in results.items()
        if (p := r.startup_parts) is not None
    ]
    headers = [
        "mode",
        "ray.init (s)",
        "to worker fn (s)",
        "worker fn to first batch (s)",
        "to first epoch (s)",
    ]
    return format_table(headers, rows) if rows else ""


def bench_cache(
    cfg: Config, config_path: str | None, overrides: Sequence[str], shard_specs: Sequence[str], cores: int
) -> Path:
    """The cache to time: the shards (generated demo ones by default) preprocessed once, then reused."""
    urls = _shard_urls(cfg, shard_specs, split="train")
    cache = Path(cfg.output_dir) / cfg.name / "train_cache"
    if cache_is_current(cache, cfg, urls):
        logger.info("reusing the preprocessed cache in %s", cache)
        return cache
    shutil.rmtree(cache, ignore_errors=True)  # a stale cache's Parquet files would mix with the new ones
    logger.info("preprocessing %d shards into %s ...", len(urls), cache)
    # In its own process: the benchmark's modes must each start with no Ray running. The overrides (credentials
    # among them) go in its spec file, never in its command line, which every user of the machine can read.
    spec = {"config": config_path, "overrides": [*overrides, f"ray.num_cpus={cores}"], "urls": urls}
    run_spec(
        "mm_ray.bench.cache_child", {**spec, "cache": str(cache)}, dict(os.environ), what="preprocessing"
    )
    return cache


def cache_is_current(cache: Path, cfg: Config, urls: list[str]) -> bool:
    """True when ``cache`` was made from ``urls`` (not rewritten since) with ``cfg``'s preprocessing."""
    try:
        opened = Cache.open(str(cache))
        tokenizer_json = opened.tokenizer_json
    except (CacheError, FileNotFoundError, KeyError):
        return False
    written = (cache / MANIFEST).stat().st_mtime
    local = [u for u in urls if "://" not in u]
    return opened.manifest.made_by(cfg, tokenizer_json, urls) and all(
        os.path.getmtime(u) <= written for u in local
    )

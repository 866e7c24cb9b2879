"""``mm-ray bench train``: what Ray Train costs over a plain PyTorch loop, on the same data and model.

    mm-ray bench train                                  # 4,000 generated demo samples, preprocessed once
    mm-ray bench train --cache runs/demo/cache/train train.epochs=5 --json train.json --plot train.png
    mm-ray bench train --repeat 3                       # every mode 3 times, interleaved; medians shown
    mm-ray bench train --modes val1,val2 --repeat 2     # a large-run option against its baseline (LARGE_MODES)

Three modes, each in a fresh subprocess so that one's memory, threads and Ray cannot disturb another:

- ``plain``: one process reads the cache's Parquet into memory with pyarrow (start-up), then runs
  ``mm_ray.train.loop.train_epoch`` over shuffled in-memory batches;
- ``ray1`` / ``ray2``: ``mm_ray.train.ray_trainer.fit`` with 1 / 2 Ray Train workers on a fresh local Ray,
  the workers sharing the trainer's ``--cores`` (``train.cpus_per_worker`` = cores / workers; Ray gets one
  logical CPU more, which only a cache too large to keep in memory uses, for its Parquet read tasks).

``--cores`` below the machine's cores leaves the rest to Ray's own processes (Train controller, the
dataset's split coordinator, ...): on 2 cores, ``--cores 1`` measures what Ray Train costs the training loop
itself, ``--cores 2`` adds what those processes take from torch's threads.

All three build the model, optimizer and lr schedule from one ``LoopConfig`` (same batch size, epochs, seed),
and torch runs as many intra-op threads as the trainer has CPUs: the plain loop all cores, a Ray worker
what Ray gives it through ``OMP_NUM_THREADS`` (the worker reports what torch really uses; the table shows it).

Per mode: steady samples/s (epochs >= 2: their samples over their seconds, an epoch lasting as long as its
slowest worker), start-up (from the mode's start, after its imports, to the first epoch's start; for Ray:
Ray's start, the trainer's and the dataset's) and end-to-end samples/s (all epochs' samples over the mode's
whole wall time, checkpoints and shutdown included). Ratios are against ``plain`` measured in the same run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mm_ray.bench.measure import run_spec
from mm_ray.bench.records import StartupParts, TrainRun
from mm_ray.config.schema import Config
from mm_ray.data.manifest import PreprocessingRecord

MODES = ("plain", "ray1", "ray2")
SHARD_MODES = ("loader", "stream1", "stream1e", "ray1")
"""``--source shards``: the DataLoader loop, mm_ray streaming from the shards (one Ray Data execution for the
run, and one per epoch: ``train.one_execution``), and mm_ray on their cache."""
LARGE_MODES = ("eager", "compiled", "bf16", "ckpt200", "val1", "val2")
"""The large-run options, each against its baseline in the same run (``--modes eager,compiled``,
``--modes eager,bf16``, ``--modes eager,ckpt200``, ``--modes val1,val2``): 1 Ray Train worker on all the
cores, the same with ``train.compile``, with ``train.precision=bf16``, with a step checkpoint every 200
optimizer steps; validation on the cache itself
by 1 and by 2 workers of 1 CPU each (each worker scoring its part)."""
VALIDATION_MODES = ("val1", "val2")
"""Every worker one CPU, whatever ``--cores`` says; timed only (no memory sampling)."""
LABELS = {
    "plain": "plain PyTorch loop, in-memory batches",
    "ray1": "mm_ray fit, 1 Ray Train worker",
    "ray2": "mm_ray fit, 2 Ray Train workers",
    "loader": "plain PyTorch loop, webdataset + DataLoader from shards",
    "stream1": "mm_ray fit from shards, 1 Ray Train worker",
    "stream1e": "mm_ray fit from shards, 1 worker, one execution per epoch",
    "eager": "mm_ray fit, 1 worker, eager",
    "compiled": "mm_ray fit, 1 worker, train.compile=true",
    "bf16": "mm_ray fit, 1 worker, train.precision=bf16",
    "ckpt200": "mm_ray fit, 1 worker, step checkpoint every 200 steps",
    "val1": "mm_ray fit + validation, 1 worker x 1 CPU",
    "val2": "mm_ray fit + validation, 2 workers x 1 CPU",
}
WORKERS = {
    "plain": 1, "ray1": 1, "ray2": 2, "loader": 1, "stream1": 1, "stream1e": 1,
    "eager": 1, "compiled": 1, "bf16": 1, "ckpt200": 1, "val1": 1, "val2": 2,
}  # fmt: skip
BASELINE = {"cache": "plain", "shards": "loader"}
TARGET = 0.9
"""The issue's goal: one Ray Train worker reaches this fraction of the plain loop's steady samples/s."""
LARGE_TARGETS = {
    "val2/val1 validation seconds": ("<=", 0.6),
    "compiled/eager steady": (">=", 1.0),
    "ckpt200/eager steady": (">=", 0.95),
}
"""Issue 25's goals, ratios measured in one run."""
MODE_OVERRIDES = {
    "compiled": ["train.compile=true"],
    "bf16": ["train.precision=bf16"],
    "ckpt200": ["train.checkpoint_every_steps=200"],
    "stream1e": ["train.one_execution=false"],
}
"""What a large-run mode adds to its baseline's config."""


def cache_columns(cache_dir: str | Path) -> dict[str, Any]:
    """The cache's model-ready columns as numpy arrays, tensors in their stored shapes (read with pyarrow)."""
    import numpy as np
    import pyarrow.parquet as pq

    from mm_ray.columns import KEY, SHARD

    table = pq.read_table(Path(cache_dir) / "data")
    columns = {}
    for field in table.schema:
        if field.name in (KEY, SHARD):
            continue
        column = table.column(field.name).combine_chunks()
        shape = json.loads((field.metadata or {}).get(b"ARROW:extension:metadata", b"null"))
        if shape is None:
            columns[field.name] = column.to_numpy(zero_copy_only=False)
        else:
            # Ray's fixed-shape tensor columns are stored as flat lists with the shape in the field's metadata.
            columns[field.name] = np.asarray(column.flatten()).reshape(-1, *shape)
    return columns


def shuffled_batches(columns: dict[str, Any], batch_size: int, seed: int) -> Iterator[dict[str, Any]]:
    """One epoch of in-memory batches in a random order (the last one may be short, as in ``fit``)."""
    import numpy as np

    n = len(next(iter(columns.values())))
    order = np.random.default_rng(seed).permutation(n)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield {name: column[index] for name, column in columns.items()}


def plain_trainer(
    cfg: Config,
    *,
    shapes: Mapping[str, list[int]],
    tokenizer_json: str,
    num_classes: int,
    rows: int,
    preprocessing: PreprocessingRecord | None,
    device: str = "cpu",
) -> tuple[Any, Any, Any, Any]:
    """(loop config, model, optimizer, scheduler) built exactly as ``train_fn_per_worker`` builds them."""
    from tokenizers import Tokenizer

    from mm_ray.train.loop import seed_everything
    from mm_ray.train.schedule import optimizer_and_schedule
    from mm_ray.train.spec import LoopConfig

    loop = LoopConfig.for_run(
        cfg,
        shapes=shapes,
        vocab_size=Tokenizer.from_str(tokenizer_json).get_vocab_size(),
        num_classes=num_classes,
        rows=rows,
        has_val=False,
        preprocessing=preprocessing,
    )
    seed_everything(loop.seed)
    model = loop.model.build().to(device)
    optimizer, scheduler = optimizer_and_schedule(model, loop)
    return loop, model, optimizer, scheduler


def plain_epochs(
    trainer: tuple[Any, Any, Any, Any],
    epoch_batches: Callable[[int], Iterable[dict[str, Any]]],
    *,
    device: str,
    t0: float,
) -> dict[str, Any]:
    """Run every epoch of ``trainer`` (``plain_trainer``) over ``epoch_batches(epoch)``; returns the rates."""
    import torch

    from mm_ray.models.pretrained import apply_epoch
    from mm_ray.train.autocast import autocast_dtype, grad_scaler
    from mm_ray.train.loop import loop_epoch

    loop, model, optimizer, scheduler = trainer
    autocast = autocast_dtype(loop.precision, device, legacy_bf16=loop.bf16)
    scaler = grad_scaler(loop.precision, device)
    history = []  # the epoch rows a Ray run's history has, with the keys ``epoch_rates`` reads
    for epoch in range(loop.epochs):
        apply_epoch(model, epoch)  # library encoders' freeze schedule, as the Train workers apply it
        started_at, started = time.time(), time.perf_counter()
        first: dict[str, float] = {}
        stats = loop_epoch(
            model, _clocked(epoch_batches(epoch), first), optimizer, scheduler, loop, device=device,
            autocast_dtype=autocast, scaler=scaler,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        history.append(
            {
                "train_samples": stats["samples"],
                "train_seconds": seconds,
                "train_started_at": started_at,
                "first_batch_at": first.get("at", started_at),
            }
        )
    return {**epoch_rates(history, t0, time.time()), "torch_threads": torch.get_num_threads()}


def _clocked(batches: Iterable[Any], first: dict[str, float]) -> Iterator[Any]:
    """``batches``, noting in ``first["at"]`` when the first one arrived (as the Train worker does)."""
    for batch in batches:
        first.setdefault("at", time.time())
        yield batch


def run_plain(cfg: Config, workers: int, cores: int, t0: float) -> dict[str, Any]:
    """(a) one process, no Ray: Parquet -> memory, then ``train_epoch`` per epoch as a Ray worker runs it."""
    import torch

    from mm_ray.columns import LABEL
    from mm_ray.data.cache import Cache

    torch.set_num_threads(cores)
    columns = cache_columns(cfg.train.cache)
    cache = Cache.open(cfg.train.cache)
    trainer = plain_trainer(
        cfg,
        shapes=cache.shapes,
        tokenizer_json=cache.tokenizer_json,
        num_classes=cfg.model.num_classes or 1 + int(columns[LABEL].max()),
        rows=len(columns[LABEL]),
        preprocessing=cache.preprocessing,
    )
    batch_size, seed = trainer[0].batch_size, trainer[0].seed
    return plain_epochs(
        trainer, lambda epoch: shuffled_batches(columns, batch_size, seed=seed + epoch), device="cpu", t0=t0
    )


def run_ray(cfg: Config, workers: int, cores: int, t0: float) -> dict[str, Any]:
    """(b, c) ``fit(cfg)`` on a fresh local Ray with ``workers`` Ray Train workers sharing all cores."""
    # One logical CPU beyond the workers' for Ray Data: the workers hold every core, and a dataset that
    # streams from Parquet during training needs a CPU slot for its read tasks or it waits forever.
    return fit_on_fresh_ray(cfg, workers, ray_cpus=cores + 1, t0=t0)


def run_stream(cfg: Config, workers: int, cores: int, t0: float) -> dict[str, Any]:
    """``fit(cfg)`` from the shards on a fresh local Ray of ``cores`` CPUs: the worker and the decoding
    actors share them."""
    return fit_on_fresh_ray(cfg, workers, ray_cpus=cores, t0=t0)


def fit_on_fresh_ray(cfg: Config, workers: int, *, ray_cpus: int, t0: float) -> dict[str, Any]:
    """Start a local Ray of ``ray_cpus`` CPUs, run ``fit(cfg)``, and time it from ``t0``."""
    from mm_ray.runtime import init_ray
    from mm_ray.train.ray_trainer import fit

    init_ray(dataclasses.replace(cfg.ray, address=None, num_cpus=ray_cpus))
    ray_start_s = time.time() - t0
    history = fit(cfg).history
    end = time.time()
    return {
        **epoch_rates(history, t0, end),
        **validation_seconds(history),
        **step_checkpoint_share(history),
        "ray_start_s": round(ray_start_s, 2),
        "torch_threads": history[0].get("train_torch_threads"),
        "workers": workers,
        "startup_parts": startup_parts(history[0], t0),
    }


def loader_workers(cores: int) -> int:
    """DataLoader workers of ``loader`` (and decoding actors of ``stream1``): one per core but the
    trainer's, at least 2 (the issue's 2-core comparison)."""
    return max(2, cores - 1)


def run_loader(cfg: Config, workers: int, cores: int, t0: float) -> dict[str, Any]:
    """One process, no Ray: webdataset + DataLoader decode the shards every epoch (in the shard order of a
    seeded per-epoch shuffle) with the pipeline's own preprocessors, ``train_epoch`` trains on the batches."""
    import random

    import torch

    from mm_ray.bench.baselines import dataloader_batches
    from mm_ray.data.captions import obtain_tokenizer
    from mm_ray.data.manifest import model_ready_shapes, preprocessing_of
    from mm_ray.data.members import member_map
    from mm_ray.data.pipeline import decoders_of
    from mm_ray.data.sources import expand_shards
    from mm_ray.train.inputs import estimate_rows

    torch.set_num_threads(cores)
    urls = expand_shards(list(cfg.data.shards), storage_options=cfg.data.storage_options)
    tokenizer_json = obtain_tokenizer(cfg, urls)
    # On a GPU host (train.use_gpu) the loop trains on the GPU, as the Ray worker does.
    device = "cuda" if cfg.train.use_gpu and torch.cuda.is_available() else "cpu"
    trainer = plain_trainer(
        cfg,
        shapes=model_ready_shapes(cfg),
        tokenizer_json=tokenizer_json,
        num_classes=int(cfg.model.num_classes or 0),
        rows=cfg.train.samples_per_epoch or estimate_rows(urls, cfg),
        preprocessing=preprocessing_of(cfg),
        device=device,
    )
    decoders, members = decoders_of(cfg, tokenizer_json), member_map(cfg)
    batch_size, seed = trainer[0].batch_size, trainer[0].seed

    def epoch_batches(epoch: int) -> Iterable[dict[str, Any]]:
        order = random.Random(seed + epoch).sample(urls, len(urls))
        return dataloader_batches(order, decoders, members, batch_size, loader_workers(cores))

    return plain_epochs(trainer, epoch_batches, device=device, t0=t0)


def startup_parts(first: dict[str, Any], t0: float) -> StartupParts | None:
    """Where a Ray run's start-up went: to the worker function's entry (Ray, controller, worker group), then
    to the first batch (the dataset's first block), from the first epoch's metrics."""
    entered, first_batch = first.get("worker_entered_at"), first.get("first_batch_at")
    if entered is None or first_batch is None:
        return None
    return StartupParts(round(entered - t0, 2), round(first_batch - entered, 2))


def step_checkpoint_share(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Step checkpoints of epochs >= 2: how many, their mean seconds, and their share of those epochs' time
    (measured inside the worker around each checkpoint: the direct cost, free of run-to-run noise)."""
    later = [h for h in history[1:] or history if "train_step_checkpoints" in h]
    count = sum(h["train_step_checkpoints"] for h in later)
    if not count:
        return {}
    seconds = sum(h["train_step_checkpoint_s"] for h in later)
    return {
        "step_checkpoints": count,
        "step_checkpoint_s": round(seconds / count, 3),
        "step_checkpoint_share": round(seconds / sum(h["train_seconds"] for h in later), 4),
    }


def validation_seconds(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The validation passes' wall seconds (the slowest worker's) per epoch, and their mean over epochs >= 2."""
    seconds = [h["val_seconds"] for h in history if "val_seconds" in h]
    if not seconds:
        return {}
    later = seconds[1:] or seconds
    out = {
        "val_seconds": [round(s, 2) for s in seconds],
        "steady_val_seconds": round(sum(later) / len(later), 2),
    }
    cpu = [h["val_cpu_seconds"] for h in history if "val_cpu_seconds" in h]
    if cpu:
        later_cpu = cpu[1:] or cpu
        out["steady_val_cpu_seconds"] = round(sum(later_cpu) / len(later_cpu), 2)
    return out


def epoch_rates(history: list[dict[str, Any]], t0: float, end: float) -> dict[str, Any]:
    """Steady (epochs >= 2), end-to-end samples/s and start-up seconds from a run's per-epoch history."""
    later = history[1:] or history  # a one-epoch run has no steady state: report its only epoch
    samples = sum(h["train_samples"] for h in history)
    return {
        "epochs": len(history),
        "samples": samples,
        "epoch_seconds": [round(h["train_seconds"], 2) for h in history],
        "steady_samples_per_s": round(
            sum(h["train_samples"] for h in later) / max(sum(h["train_seconds"] for h in later), 1e-9), 1
        ),
        "startup_s": round(history[0]["train_started_at"] - t0, 2),
        "epoch_startup_s": epoch_startups(history, t0),
        "seconds": round(end - t0, 2),
        "samples_per_s": round(samples / max(end - t0, 1e-9), 1),
    }


def epoch_startups(history: list[dict[str, Any]], t0: float) -> list[float] | None:
    """Per epoch, the wait for its first batch: the first epoch's from the mode's start, each later one's from
    the end of the previous epoch's training (so validation, checkpoints and a new execution's actor start-up
    all count). None when the history has no first-batch times."""
    if any("first_batch_at" not in h for h in history):
        return None
    ends = [t0] + [h["train_started_at"] + h["train_seconds"] for h in history[:-1]]
    return [round(h["first_batch_at"] - end, 2) for h, end in zip(history, ends, strict=True)]


def mode_overrides(mode: str, cores: int, cache: str, storage: str, shards: list[str]) -> list[str]:
    """The config of one mode: its worker count and CPUs, a fresh run (no resume), no validation."""
    workers = WORKERS[mode]
    if mode in ("loader", "stream1", "stream1e"):
        from mm_ray.data.cache import Cache

        return [
            f"name=bench-train-{mode}",
            "train.cache=null",
            "train.val_cache=null",
            f"data.shards={json.dumps(shards)}",
            "data.val_shards=[]",
            f"model.num_classes={Cache.open(cache).num_classes}",
            f"train.storage_path={storage}",
            f"output_dir={storage}",
            "train.num_workers=1",
            # The worker keeps one CPU slot; the decoding actors share the rest, as many as DataLoader workers.
            "train.cpus_per_worker=1",
            f"train.torch_threads={cores}",
            f"pools.fused.num_cpus={(cores - 1) / loader_workers(cores):g}",
            "train.checkpoints_to_keep=1",
            "train.fail_at_epoch=0",
            *MODE_OVERRIDES.get(mode, []),
        ]
    if mode in VALIDATION_MODES:
        # Every worker one CPU, whatever --cores says: the question is what a second worker buys validation.
        return [
            f"name=bench-train-{mode}",
            f"train.cache={cache}",
            f"train.val_cache={cache}",
            "train.subset_eval_every=1",
            f"train.storage_path={storage}",
            f"output_dir={storage}",
            f"train.num_workers={workers}",
            "train.cpus_per_worker=1",
            "train.checkpoints_to_keep=1",
            "train.fail_at_epoch=0",
        ]
    return [
        f"name=bench-train-{mode}",
        f"train.cache={cache}",
        "train.val_cache=null",
        f"train.storage_path={storage}",
        f"output_dir={storage}",
        f"train.num_workers={workers}",
        f"train.cpus_per_worker={cores / workers}",
        "train.checkpoints_to_keep=1",
        "train.fail_at_epoch=0",
        *MODE_OVERRIDES.get(mode, []),
    ]


RUNNERS = {"plain": run_plain, "loader": run_loader, "stream1": run_stream, "stream1e": run_stream}
"""Every mode not here is ``run_ray``."""


def run_mode(
    mode: str, config_path: str | None, overrides: list[str], cache: str, cores: int, shards: list[str]
) -> TrainRun:
    """Run one mode in this process (called inside the per-mode subprocess)."""
    # Imported before the clock starts (ray_trainer pulls in torch and Ray Train): start-up counts the
    # work of starting Ray, the trainer and the data, not Python's imports.
    import mm_ray.train.ray_trainer  # noqa: F401
    from mm_ray.bench.measure import TreeMonitor
    from mm_ray.config.load import load_config

    with tempfile.TemporaryDirectory() as storage:
        cfg = load_config(config_path, [*overrides, *mode_overrides(mode, cores, cache, storage, shards)])
        # The validation pair is a time measurement with every core held by a worker: reading PSS (a fifth of a
        # core in this process, measured) would take it from the workers being timed.
        with TreeMonitor(os.getpid(), memory=mode not in VALIDATION_MODES) as mon:
            t0 = time.time()
            run = RUNNERS.get(mode, run_ray)
            result = run(cfg, WORKERS[mode], cores, t0)
        # Ray stops after the monitor's last look, while its processes still have their names.
        _stop_ray()
    return TrainRun(
        **result,
        peak_pss_mb=None if mon.peak_pss_mb is None else round(mon.peak_pss_mb, 1),
        cpu_s_by_process=mon.cpu_by_group(),
        cpu_s_split=mon.cpu_split_by_group(),
    )


def run_in_subprocess(
    mode: str, config_path: str | None, overrides: list[str], cache: str, cores: int, shards: list[str]
) -> TrainRun:
    """Run ``mode`` in a fresh interpreter on ``cache`` (or ``shards``); returns its result."""
    spec = {"mode": mode, "config": config_path, "overrides": overrides, "cores": cores, "shards": shards}
    spec["cache"] = str(Path(cache).resolve())
    # Ray sets OMP_NUM_THREADS from each worker's CPUs only when it is unset: an inherited value
    # (the ingest benchmark pins 1) would hide what a worker gets by itself.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return TrainRun.from_dict(run_spec("mm_ray.bench.train", spec, env, what=f"bench train mode {mode}"))


def large_ratios(results: Mapping[str, TrainRun]) -> dict[str, float]:
    """The large-run options' ratios, for the pairs of modes that ran: compiled, bf16 and ckpt200 over eager
    (steady samples/s), val2 over val1 (steady validation seconds)."""
    out = {}
    for mode in ("compiled", "bf16", "ckpt200"):
        if mode in results and "eager" in results:
            out[f"{mode}/eager steady"] = round(
                results[mode].steady_samples_per_s / results["eager"].steady_samples_per_s, 3
            )
    val1, val2 = results.get("val1"), results.get("val2")
    if val1 is not None and val2 is not None and val1.steady_val_seconds and val2.steady_val_seconds:
        out["val2/val1 validation seconds"] = round(val2.steady_val_seconds / val1.steady_val_seconds, 3)
        if val1.steady_val_cpu_seconds and val2.steady_val_cpu_seconds:
            out["val2/val1 validation CPU seconds (slowest worker)"] = round(
                val2.steady_val_cpu_seconds / val1.steady_val_cpu_seconds, 3
            )
    return out


def ratios(results: Mapping[str, TrainRun], baseline: str = "plain") -> dict[str, float]:
    """Every other mode over ``baseline``, steady and end to end (only for the modes that ran)."""
    base = results[baseline]
    out = {}
    for mode, r in results.items():
        if mode != baseline and mode not in LARGE_MODES:
            out[f"{mode}/{baseline} steady"] = round(r.steady_samples_per_s / base.steady_samples_per_s, 3)
            out[f"{mode}/{baseline} end to end"] = round(r.samples_per_s / base.samples_per_s, 3)
    return out


TRAIN_BARS = (("steady_samples_per_s", "steady (epochs >= 2)"), ("samples_per_s", "end to end"))


def plot_train(results: Mapping[str, TrainRun], path: str | Path) -> Path:
    """A PNG bar chart of steady and end-to-end samples/s per mode; returns its path."""
    from mm_ray.bench.plot import plot_modes

    return plot_modes(
        results, LABELS, path, bars=TRAIN_BARS, title="mm-ray bench train", ylabel="training samples / s"
    )


def _stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _worker_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = run_mode(
        spec["mode"], spec["config"], spec["overrides"], spec["cache"], spec["cores"], spec["shards"]
    )
    Path(spec["out"]).write_text(json.dumps(result.to_dict()))


if __name__ == "__main__":
    _worker_main(sys.argv[1])

"""``mm-ray bench ingest``: (a) parallel decode floor, (b) webdataset + DataLoader, (c) the mm_ray Ray pipeline,
(d) the simplest Ray Data pipeline with the same decoders (``mm_ray.bench.ray_floor``).

All four run on the same generated shards with the same preprocessing code, one after the
other, each in a fresh subprocess so its peak memory is its own. For each: samples/s over the
whole run (from the start of the pipeline to the last batch), the time to the first batch,
samples/s after the first batch (steady state), peak PSS of the process tree, and CPU seconds
per process group (where the time goes), split into start-up (a Ray worker's before its first task) and
steady. Ray's one-off session start, including Ray Data's helper actors, is excluded and reported as
``ray_start_s``. The Ray pipelines also report the thread pools inside one of their actors. Ratios c/b, c/d
(what mm_ray adds to Ray Data), d/b (what Ray Data costs) and c/a are printed; ``--json PATH`` writes
everything.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mm_ray import columns as C
from mm_ray.bench.baselines import dataloader_batches, decode_floor
from mm_ray.bench.measure import TreeMonitor, run_spec
from mm_ray.bench.ray_floor import floor_dataset
from mm_ray.bench.records import IngestRun, ThreadPools
from mm_ray.config.schema import Config
from mm_ray.data.members import member_map
from mm_ray.data.pipeline import Ingest, decoders_of, plan_of
from mm_ray.data.sources import expand_shards
from mm_ray.modalities.registry import modalities_of

MODES = ("floor", "dataloader", "ray", "raydata")
LABELS = {
    "floor": "(a) decode floor: plain processes, whole shards",
    "dataloader": "(b) webdataset + DataLoader",
    "ray": "(c) mm_ray: Ray Data + actor pools",
    "raydata": "(d) Ray Data floor: from_items + one actor pool",
}


# Every pipeline runs one decode per process: BLAS/OpenMP thread pools inside each of several
# processes on the same cores only add contention (Ray's workers get OMP_NUM_THREADS=1 anyway).
SINGLE_THREADED = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class _Clock:
    """Counts samples as batches arrive; remembers when the first one came."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.samples = 0
        self.samples_at_first = 0
        self.end: float | None = None

    def batch(self, n: int) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.samples_at_first = n
        self.samples += n

    def stop(self) -> None:
        """The last batch came: the clock stops here (before the monitor's own last look)."""
        self.end = time.perf_counter()

    def result(self, monitor: TreeMonitor, **ray: Any) -> IngestRun:
        """The run's figures, with ``monitor``'s memory and CPU and the Ray pipeline's own (``ray``)."""
        end = self.end or time.perf_counter()
        first = self.first or end
        steady = (self.samples - self.samples_at_first) / max(end - first, 1e-9)
        return IngestRun(
            samples=self.samples,
            seconds=round(end - self.start, 2),
            first_batch_s=round(first - self.start, 2),
            samples_per_s=round(self.samples / (end - self.start), 1),
            steady_samples_per_s=round(steady, 1),
            peak_pss_mb=round(monitor.peak_pss_mb, 1),
            cpu_s_by_process=monitor.cpu_by_group(),
            cpu_s_split=monitor.cpu_split_by_group(),
            **ray,
        )


def run_mode(
    mode: str, cfg: Config, tokenizer_json: str, urls: list[str], cores: int, repeat: int = 1
) -> IngestRun:
    """Run one mode in this process (called inside the per-mode subprocess)."""
    decoders = decoders_of(cfg, tokenizer_json)
    members, batch = member_map(cfg), cfg.pools.fused.batch_size
    extra: dict[str, Any] = {}
    with TreeMonitor(os.getpid()) as mon:
        if mode in ("ray", "raydata"):
            extra["ray_start_s"] = start_ray(cores)
            if mode == "ray":
                ingest = Ingest.from_config(cfg, urls, tokenizer_json, repeat=repeat)
                plan, dataset = ingest.plan, ingest.dataset
            else:
                plan = plan_of(cfg, modalities_of(cfg))
                pool = next(iter(plan.pools.values()))
                dataset = floor_dataset(
                    urls * repeat,
                    decoders,
                    members,
                    batch_size=batch,
                    actors=pool.max_size,
                    num_cpus=pool.num_cpus,
                )
            extra["pools"] = plan.describe()
            clock = _Clock()
            for b in dataset.iter_batches(batch_size=batch, batch_format="numpy"):
                clock.batch(len(b[C.LABEL]))
            clock.stop()
            extra["threads"] = actor_threads(decoders, next(iter(plan.pools.values())).num_cpus)
        elif mode == "dataloader":
            clock = _Clock()
            for b in dataloader_batches(urls, decoders, members, batch, workers=cores):
                clock.batch(len(b[C.LABEL]))
        else:
            clock = _Clock()
            clock.batch(0)
            clock.samples = decode_floor(urls, decoders, members, batch, processes=cores)
        if clock.end is None:
            clock.stop()
    return clock.result(mon, **extra)


def start_ray(cores: int) -> float:
    """Start a local Ray of ``cores`` CPUs and Ray Data's helper actors; returns the seconds it took."""
    import ray.data

    from mm_ray.config.schema import RayConfig
    from mm_ray.runtime import init_ray

    t0 = time.perf_counter()
    init_ray(RayConfig(num_cpus=cores))
    # One-off per Ray session, not per pipeline: Ray Data starts its own helper actors
    # (stats, autoscaling coordinator) with the first dataset. A job that trains or
    # sweeps pays this once, so it is counted with the cluster start, not the pipeline.
    ray.data.range(1).materialize()
    return round(time.perf_counter() - t0, 2)


class _StageProbe:
    """An actor built like a decoding actor (a ``FusedStage`` of the run's decoders) that reports its threads."""

    def __init__(self, decoders: Any):
        from mm_ray.data.stages import FusedStage

        self._stage = FusedStage(None, stages=decoders)

    def report(self) -> dict[str, Any]:
        from mm_ray.data.threads import thread_report

        return thread_report()


def actor_threads(decoders: Any, num_cpus: float) -> ThreadPools:
    """The thread pools inside an actor of ``num_cpus`` CPUs that built the run's stages (run after the
    pipeline, when its CPUs are free again)."""
    import ray

    probe = ray.remote(num_cpus=num_cpus)(_StageProbe).remote(decoders)
    try:
        return ThreadPools(**ray.get(probe.report.remote()))
    finally:
        ray.kill(probe)


def run_in_subprocess(
    mode: str,
    config_path: str,
    overrides: list[str],
    tokenizer: str,
    urls: list[str],
    cores: int,
    repeat: int = 1,
) -> IngestRun:
    """Run ``mode`` in a fresh interpreter; returns its result."""
    spec = {"mode": mode, "config": config_path, "overrides": overrides, "cores": cores}
    spec.update(tokenizer=tokenizer, urls=urls, repeat=repeat)
    env = {**os.environ, **SINGLE_THREADED}
    return IngestRun.from_dict(run_spec("mm_ray.bench.ingest", spec, env, what=f"bench mode {mode}"))


def _worker_main(spec_path: str) -> None:
    from mm_ray.config.load import load_config

    spec = json.loads(Path(spec_path).read_text())
    cfg = load_config(spec["config"], spec["overrides"])
    tokenizer_json = Path(spec["tokenizer"]).read_text()
    result = run_mode(spec["mode"], cfg, tokenizer_json, spec["urls"], spec["cores"], spec["repeat"])
    Path(spec["out"]).write_text(json.dumps(result.to_dict()))


def resolve_urls(cfg: Config, shard_specs: list[str]) -> list[str]:
    return expand_shards(shard_specs, storage_options=cfg.data.storage_options)


if __name__ == "__main__":
    _worker_main(sys.argv[1])

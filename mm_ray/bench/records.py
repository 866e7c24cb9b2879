"""The benchmarks' results as typed records: one per mode's run, one per benchmark's summary.

    run = TrainRun.from_dict(run_spec("mm_ray.bench.train", spec, env, what="..."))   # a child's result
    summary = TrainBench(cores=2, ..., results={"plain": run, ...})
    summary.to_dict()                  # what ``mm-ray bench train --json`` writes (and a child writes of its run)

Every benchmark mode runs in a fresh interpreter (``mm_ray.bench.measure.run_spec``) and hands its result back as
JSON: the child writes ``to_dict()``, the parent reads ``from_dict`` (a field either side does not know fails,
naming it). Numbers are as measured (rates rounded to 0.1, seconds to 0.01); None (left out of ``to_dict``) is
what a mode does not measure. Pure Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mm_ray.records import plain, read_record


@dataclasses.dataclass(frozen=True)
class CpuSplit:
    """One process group's CPU seconds: before its processes' first task (start-up) and from it on (steady)."""

    startup: float
    steady: float


@dataclasses.dataclass(frozen=True)
class ThreadPools:
    """The intra-op thread pools inside one decoding actor, as the actor reports them (``mm_ray.data.threads``)."""

    cpus: float
    """The actor's CPUs (its ``num_cpus``), which the pools were capped to (rounded up, at least 1)."""
    torch_threads: int | None
    pyarrow_cpus: int
    threadpools: tuple[Mapping[str, Any], ...]
    """``threadpoolctl.threadpool_info()``: every BLAS/OpenMP pool loaded, with its ``num_threads``."""
    os_threads: int
    """Threads of the actor's process (``psutil``), Ray's own included."""


@dataclasses.dataclass(frozen=True)
class IngestRun:
    """One run of a ``bench ingest`` pipeline (or of ``bench memory``'s Ray pipeline at one scale)."""

    samples: int
    seconds: float
    first_batch_s: float
    samples_per_s: float
    """All samples over the whole run."""
    steady_samples_per_s: float
    """Samples after the first batch over the time after it."""
    peak_pss_mb: float
    cpu_s_by_process: Mapping[str, float]
    """CPU seconds per process group (``TreeMonitor.cpu_by_group``)."""
    cpu_s_split: Mapping[str, CpuSplit] | None = None
    """The same split into start-up and steady (``TreeMonitor.cpu_split_by_group``)."""
    threads: ThreadPools | None = None
    """The Ray pipeline: the thread pools inside a decoding actor."""
    ray_start_s: float | None = None
    """The Ray pipeline: Ray's one-off session start (with Ray Data's helper actors), not counted above."""
    pools: str | None = None
    """The Ray pipeline: its resource plan in words."""
    steady_samples_per_s_runs: tuple[float, ...] = ()
    """Repeated runs (``--repeat``): every run's steady rate; this record is the median one."""

    def to_dict(self) -> dict[str, Any]:
        return plain(self, omit_none=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IngestRun:
        return read_record(cls, data, "bench ingest run")


@dataclasses.dataclass(frozen=True)
class StartupParts:
    """Where a Ray training run's start-up went, from the mode's start (after imports)."""

    to_worker_s: float
    """To the worker function's entry: Ray, the Train controller, the worker group."""
    worker_to_first_batch_s: float
    """From there to the first batch: the dataset's first block."""


@dataclasses.dataclass(frozen=True)
class TrainRun:
    """One run of a ``bench train`` mode."""

    epochs: int
    samples: int
    """All epochs' samples."""
    epoch_seconds: tuple[float, ...]
    steady_samples_per_s: float
    """Epochs >= 2: their samples over their seconds (an epoch lasting as long as its slowest worker)."""
    startup_s: float
    """From the mode's start to the first epoch's start."""
    seconds: float
    samples_per_s: float
    """All epochs' samples over the mode's whole wall time (checkpoints and shutdown included)."""
    torch_threads: int | None
    """The intra-op threads torch really used (a Ray worker reports its own)."""
    peak_pss_mb: float | None
    """None: not sampled (a mode that measures time only, ``TreeMonitor(memory=False)``)."""
    cpu_s_by_process: Mapping[str, float]
    cpu_s_split: Mapping[str, CpuSplit] | None = None
    """CPU seconds by process group, start-up and steady (``TreeMonitor.cpu_split_by_group``)."""
    epoch_startup_s: tuple[float, ...] | None = None
    """Per epoch: the wait for its first batch, from the end of the previous epoch's training (the first
    epoch: from the mode's start), validation and checkpoints between epochs included."""
    ray_start_s: float | None = None
    workers: int | None = None
    startup_parts: StartupParts | None = None
    steady_samples_per_s_runs: tuple[float, ...] = ()
    """Repeated runs (``--repeat``): every run's steady rate; this record is the median one."""
    val_seconds: tuple[float, ...] | None = None
    """Runs with validation: each epoch's validation wall seconds (the slowest worker's)."""
    steady_val_seconds: float | None = None
    """Their mean over epochs >= 2."""
    steady_val_cpu_seconds: float | None = None
    """The slowest worker's validation CPU seconds, mean over epochs >= 2."""
    step_checkpoints: int | None = None
    """Runs with step checkpoints: how many were taken in epochs >= 2."""
    step_checkpoint_s: float | None = None
    """Their mean seconds, timed inside the worker."""
    step_checkpoint_share: float | None = None
    """Their share of those epochs' training time."""

    def to_dict(self) -> dict[str, Any]:
        return plain(self, omit_none=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainRun:
        return read_record(cls, data, "bench train run")


@dataclasses.dataclass(frozen=True)
class ProcessPeak:
    group: str
    pss_mb: float


@dataclasses.dataclass(frozen=True)
class StreamMemoryRun:
    """One ``bench stream-memory`` training run (one scale of the data)."""

    samples: int
    seconds: float
    samples_per_s: float
    peak_pss_mb: float
    """Peak of the run's processes' summed PSS (the object store counted once)."""
    peak_rss_mb: float
    largest_process: ProcessPeak
    peak_pss_mb_by_group: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamMemoryRun:
        return read_record(cls, data, "bench stream-memory run")


@dataclasses.dataclass(frozen=True)
class HostileCase:
    """One ``bench hostile`` case: a whole ``preprocess`` run over a shard with one hostile sample."""

    seconds: float
    largest_process_mb: float
    largest_process: str
    """The process group whose single process peaked highest."""
    tree_peak_mb: float
    samples_ok: int
    quarantine_reasons: Mapping[str, int]
    members_ignored: Mapping[str, int]
    shard_mb: float | None = None
    """The case's shard on disk (the parent measures it)."""

    def to_dict(self) -> dict[str, Any]:
        return plain(self, omit_none=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostileCase:
        return read_record(cls, data, "bench hostile case")


@dataclasses.dataclass(frozen=True)
class IngestBench:
    """``bench ingest``: the pipelines on the same shards, and mm_ray's ratios to the others."""

    cores: int
    shards: int
    rounds: int
    results: Mapping[str, IngestRun]
    """Mode -> its (median) run."""
    ratios: Mapping[str, float] | None = None
    """``c/b``, ``c/b steady``, ``first batch c/b``, ``c/a`` (those whose modes ran): the median over rounds."""
    ratios_by_round: tuple[Mapping[str, float], ...] | None = None
    runs_by_round: tuple[Mapping[str, IngestRun], ...] | None = None
    """Every round's run of every mode (``--repeat``)."""

    def to_dict(self) -> dict[str, Any]:
        return plain(self, omit_none=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IngestBench:
        return read_record(cls, data, "bench ingest")


@dataclasses.dataclass(frozen=True)
class MemoryBench:
    """``bench memory``: the Ray pipeline over the shards once and ten times over."""

    results: Mapping[str, IngestRun]
    """``1x`` and ``10x``."""
    memory_ratio_10x_1x: float

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemoryBench:
        return read_record(cls, data, "bench memory")


@dataclasses.dataclass(frozen=True)
class BenchModel:
    """The model every ``bench train`` mode trains."""

    preset: str
    width: int
    depth: int


@dataclasses.dataclass(frozen=True)
class TrainBench:
    """``bench train``: the plain loop (or the DataLoader loop) against mm_ray's ``fit``, same data and model."""

    cores: int
    source: str
    """``cache`` or ``shards``."""
    cache: str
    shards: int | None
    """``source=shards``: the shard files read."""
    epochs: int
    model: BenchModel
    batch_size: int
    results: Mapping[str, TrainRun]
    """Mode -> its (median) run."""
    ratios: Mapping[str, float] | None = None
    """Every other mode over the baseline, steady and end to end; the large-run options' ratios (the median of
    their rounds' ratios)."""
    rounds: int = 1
    large_ratios_by_round: tuple[Mapping[str, float], ...] | None = None
    """The large-run options' ratios of each round's pair of runs."""
    runs_by_round: tuple[Mapping[str, TrainRun], ...] | None = None
    """``--repeat`` > 1: every round's run of every mode."""
    ratios_by_round: tuple[Mapping[str, float], ...] | None = None
    """``--repeat`` > 1: each round's ratios over the baseline (the same modes, run back to back)."""

    def to_dict(self) -> dict[str, Any]:
        return plain(self, omit_none=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainBench:
        return read_record(cls, data, "bench train")


@dataclasses.dataclass(frozen=True)
class StreamMemoryBench:
    """``bench stream-memory``: streaming training over the data once and ``scale`` times over."""

    cores: int
    scale: int
    results: Mapping[str, StreamMemoryRun]
    """``1x`` and ``<scale>x``."""
    memory_ratio: float
    rss_ratio: float
    target: float

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamMemoryBench:
        return read_record(cls, data, "bench stream-memory")


@dataclasses.dataclass(frozen=True)
class GenerationRow:
    """One line of ``bench generate``'s table: the topic read back from one set of images."""

    images: str
    colour_topic: float
    """Fraction whose background colour shows the topic their caption names."""
    classifier_topic: float
    """Fraction whose topic the topic reader reads as the caption's."""
    chance: float
    diversity: float
    """Mean pairwise RMS distance per pixel of images of one caption (generated) or one topic (real)."""
    colour_vs_rendered: float | None = None
    """Real images only: the colour agreeing with the colour each was rendered with."""
    classifier_vs_rendered: float | None = None


@dataclasses.dataclass(frozen=True)
class GeneratorTraining:
    """How one model of ``bench generate`` was trained."""

    epochs: int
    seconds: float
    last_epoch: Mapping[str, Any]
    """The plain loop's statistics of the last epoch (losses, samples), by name."""


@dataclasses.dataclass(frozen=True)
class GenerationBench:
    """``bench generate``: the generative presets' images drawn from text, scored against the real ones."""

    rows: tuple[GenerationRow, ...]
    topics: int
    train: Mapping[str, GeneratorTraining]
    grid: str
    """The PNG grid: per topic, real images and each model's draws."""
    samples: int
    grid_rows: str

    def to_dict(self) -> dict[str, Any]:
        return plain(self, omit_none=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationBench:
        return read_record(cls, data, "bench generate")


@dataclasses.dataclass(frozen=True)
class PredictRun:
    """One ``bench predict`` run: a whole batch-inference pass over the shards, in a fresh interpreter."""

    mode: str
    """``dataloader`` (webdataset + DataLoader, the model in the main process) or ``mm_ray`` (``mm_ray.predict``)."""
    samples: int
    seconds: float
    """From before the first shard is opened to the last prediction written (Ray's start-up included)."""
    samples_per_s: float
    peak_pss_mb: float
    peak_rss_mb: float
    cpu_s_by_group: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """CPU seconds per process group (driver, Ray daemons, pool actors, DataLoader workers, ...)."""

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictRun:
        return read_record(cls, data, "bench predict run")


@dataclasses.dataclass(frozen=True)
class PredictBench:
    """``bench predict``: ``mm_ray.predict`` against a plain loop, paired rounds; its memory at 1x and
    ``scale`` x the data."""

    cores: int
    samples: int
    rounds: tuple[Mapping[str, PredictRun], ...]
    """Each round's runs by mode, run back to back (the order alternates from round to round)."""
    ratios_by_round: tuple[float, ...]
    """mm_ray samples/s over the plain loop's, per round."""
    ratio: float
    """Their median."""
    target: float
    memory: Mapping[str, PredictRun] = dataclasses.field(default_factory=dict)
    """``1x`` and ``<scale>x`` runs of mm_ray predict."""
    memory_ratio: float | None = None
    memory_target: float = 1.3

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictBench:
        return read_record(cls, data, "bench predict")


@dataclasses.dataclass(frozen=True)
class ServeBench:
    """``bench serve``: one exported model behind ``mm-ray serve``, a bounded load of real HTTP requests."""

    clients: int
    """Requests in flight at most (each client sends its next request when its answer came)."""
    requests: int
    replicas: int
    max_batch_size: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    """Answers other than 200 (every request is a good sample)."""

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServeBench:
        return read_record(cls, data, "bench serve")

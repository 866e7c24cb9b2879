"""How many trials may run at once: the cluster's CPUs/GPUs against one trial's needs.

    trial = TrialResources.from_config(cfg)        # driver + train.num_workers x (cpus, gpu) per worker
    max_concurrent_trials(trial, cpus=16, gpus=4, data_cpus=2)   # -> 4 (GPU-bound: 1 worker x 1 GPU each)

A trial is a Tune function (the Train driver, ``tune.driver_cpus``) plus a Ray Train worker group that
starts only when *all* its workers fit at once. A trial admitted without room for its workers holds its
driver's CPU while it waits, and more trials than fit would each start Ray Data read tasks that then find
no CPU: so the number of concurrent trials follows the scarcest resource, after setting ``data_cpus`` aside
for the cache-read tasks every trial's ingest needs (each read task takes one whole CPU).

Pure arithmetic, no Ray: ``mm_ray.tune.sweep`` passes in ``ray.cluster_resources()``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import Config

# Resource sums such as 3 x 0.1 are not exact in binary floating point.
_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class TrialResources:
    """What one trial holds while it runs."""

    driver_cpus: float
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    worker_resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Custom resources per worker (``train.worker_resources``): the nodes declaring them bound the trials too."""

    @classmethod
    def from_config(cls, cfg: Config) -> TrialResources:
        t = cfg.train
        gpus = 1.0 if t.use_gpu else 0.0
        return cls(cfg.tune.driver_cpus, t.num_workers, t.cpus_per_worker, gpus, dict(t.worker_resources))

    @property
    def cpus(self) -> float:
        return self.driver_cpus + self.workers * self.cpus_per_worker

    @property
    def gpus(self) -> float:
        return self.workers * self.gpus_per_worker


def max_concurrent_trials(
    trial: TrialResources,
    *,
    cpus: float,
    gpus: float,
    data_cpus: float,
    custom: Mapping[str, float] | None = None,
) -> int:
    """Most trials whose drivers and worker groups all fit at once, leaving ``data_cpus`` free for Ray Data;
    ``custom``: the cluster's totals of the custom resources the workers ask for (``train.worker_resources``).

    Raises ``ConfigError`` (naming the keys to change) when not even one trial fits.
    """
    if trial.cpus <= 0:
        # Nothing would bound the number of trials (and so of Ray Data pipelines) on a CPU cluster.
        raise ConfigError("tune.driver_cpus: a trial must reserve some CPU (driver or workers)")
    limits = [math.floor((cpus - data_cpus) / trial.cpus + _EPS)]
    if trial.gpus > 0:
        limits.append(math.floor(gpus / trial.gpus + _EPS))
    for name, amount in trial.worker_resources.items() if trial.workers else ():
        have, need = (custom or {}).get(name, 0.0), trial.workers * amount
        if have < need - _EPS:
            raise ConfigError(
                f"train.worker_resources: a trial's {trial.workers} workers need {need:g} "
                f"{name!r}, the cluster declares {have:g}"
            )
        limits.append(math.floor(have / need + _EPS))
    fits = min(limits)
    if fits < 1:
        raise ConfigError(
            f"tune: one trial needs {trial.cpus:g} CPUs and {trial.gpus:g} GPUs "
            f"(tune.driver_cpus + train.num_workers x train.cpus_per_worker / use_gpu), the cluster has "
            f"{cpus:g} CPUs ({data_cpus:g} kept for Ray Data: tune.data_cpus) and {gpus:g} GPUs"
        )
    return fits


def concurrency(
    cfg: Config,
    *,
    cpus: float,
    gpus: float,
    trials: int | None = None,
    custom: Mapping[str, float] | None = None,
) -> int:
    """``tune.max_concurrent_trials`` when set, else the derived maximum (never more than the sweep's
    ``trials``, by default ``tune.num_samples``); ``custom``: the cluster's custom resource totals."""
    if cfg.tune.max_concurrent_trials is not None:
        if cfg.tune.max_concurrent_trials < 1:
            raise ConfigError("tune.max_concurrent_trials: must be >= 1 (or null to derive it)")
        return cfg.tune.max_concurrent_trials
    if not cfg.train.cache and cfg.data.shards:
        # A streaming trial also runs its own ingest actor pools, sized from the free CPUs when it starts:
        # two trials planning on the same free CPUs would each wait for actors the other holds.
        return 1
    derived = max_concurrent_trials(
        TrialResources.from_config(cfg), cpus=cpus, gpus=gpus, data_cpus=cfg.tune.data_cpus, custom=custom
    )
    return max(1, min(derived, trials or cfg.tune.num_samples))

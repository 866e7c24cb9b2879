"""Resource policy for ingest: how many actors each modality pool gets and how many CPUs each holds.

All of Ray Data's resource decisions for mm_ray are made here, from the cluster's totals, so a
pipeline that runs on a 64-core cluster also runs on a 2-CPU laptop without deadlocking.

Why budgets matter: a Ray actor holds its ``num_cpus`` for its whole life. If the pools hold
every CPU, the shard-read tasks that feed them can never be scheduled and the pipeline hangs
(seen on a 2-CPU node with two 1-CPU actors). So the plan first reserves CPUs for
``read_slots`` concurrent read tasks (and for any trainer workers sharing the cluster), then
splits the rest between the pools by the measured relative cost of each modality.
``num_cpus`` is a scheduling budget, not a cap: fractional values let more actor processes
than cores run and the OS shares the cores between them.
"""

from __future__ import annotations

import dataclasses
import math

from mm_ray.config.load import ConfigError

# Relative CPU cost per sample, measured with the demo data (256-512 px JPEG, 1 s FLAC/WAV at
# mixed rates, short captions): image decode+resize ~2 ms, audio decode+resample+log-mel
# ~2 ms, tokenisation ~0.01 ms. Text keeps a small share so its single actor is never starved.
COST_SHARE = {"image": 0.475, "audio": 0.475, "text": 0.05}


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    """The resolved size and resources of one modality's actor pool."""

    min_size: int
    max_size: int
    num_cpus: float
    num_gpus: float
    batch_size: int


@dataclasses.dataclass(frozen=True)
class IngestPlan:
    """Resolved resources of the whole ingest pipeline."""

    read_num_cpus: float
    pools: dict[str, PoolPlan]
    total_cpus: float
    reserved_cpus: float
    groups: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Pool name -> the modalities its actors preprocess (a pool per modality when empty)."""
    reads_in_pool: bool = False
    """The first pool reads the shards itself (no read tasks)."""

    def __post_init__(self) -> None:
        if not self.groups:
            object.__setattr__(self, "groups", {name: (name,) for name in self.pools})

    @property
    def pool_cpus(self) -> float:
        """CPUs the pools hold when every pool is at its max size."""
        return sum(p.max_size * p.num_cpus for p in self.pools.values())

    def describe(self) -> str:
        parts = [
            f"{m}{self._runs(m)}: {p.min_size}-{p.max_size} x {p.num_cpus:g} CPU"
            + (f" {p.num_gpus:g} GPU" if p.num_gpus else "")
            for m, p in self.pools.items()
        ]
        reads = (
            "shards read in the first pool"
            if self.reads_in_pool
            else f"reads {self.read_num_cpus:g} CPU each"
        )
        return f"{'; '.join(parts)}; {reads}; cluster {self.total_cpus:g} CPU"

    def _runs(self, name: str) -> str:
        modalities = self.groups.get(name, (name,))
        return "" if modalities == (name,) else f" ({'+'.join(modalities)})"


def plan_ingest(
    pools: dict[str, dict],
    *,
    total_cpus: float,
    total_gpus: float = 0.0,
    read_num_cpus: float = 0.25,
    read_slots: int = 2,
    reserved_cpus: float = 0.0,
    shares: dict[str, float] | None = None,
    groups: dict[str, tuple[str, ...]] | None = None,
    reads_in_pool: bool = False,
) -> IngestPlan:
    """Resolve pool sizes. ``pools[name]`` holds the PoolConfig fields as a dict (``name`` is a modality, or
    ``fused`` for the pool that runs several), ``shares[name]`` its fraction of the CPU budget (default:
    ``COST_SHARE``, or the whole budget for a single pool).

    Sizes left as None are derived: ``floor(share * budget / num_cpus)``, at least 1.
    Raises ``ConfigError`` naming the ``pools.*`` key when the plan cannot fit the cluster.
    """
    budget = total_cpus - reserved_cpus - read_num_cpus * read_slots
    if budget <= 0:
        raise ConfigError(
            f"pools: no CPU left for preprocessing actors: cluster has {total_cpus:g} CPUs, "
            f"{reserved_cpus:g} reserved for training and {read_num_cpus * read_slots:g} for "
            f"{read_slots} read tasks (pools.read_num_cpus={read_num_cpus:g})"
        )
    if shares is None:
        shares = {m: 1.0 for m in pools} if len(pools) == 1 else {m: COST_SHARE.get(m, 0.1) for m in pools}
    plans = {m: _plan_pool(m, cfg, budget * shares[m], total_gpus) for m, cfg in pools.items()}
    plan = IngestPlan(read_num_cpus, plans, total_cpus, reserved_cpus, dict(groups or {}), reads_in_pool)
    if plan.pool_cpus > budget + 1e-9:
        worst = max(plans, key=lambda m: plans[m].max_size * plans[m].num_cpus)
        raise ConfigError(
            f"pools: actor pools need {plan.pool_cpus:g} CPUs at max size but only {budget:g} of the "
            f"cluster's {total_cpus:g} are left after read tasks and training; this would deadlock. "
            f"Lower pools.{worst}.max_size or pools.{worst}.num_cpus"
        )
    return plan


def _plan_pool(modality: str, cfg: dict, budget: float, total_gpus: float) -> PoolPlan:
    """``budget``: the CPUs this pool's share of the cluster allows."""
    num_cpus, num_gpus = float(cfg["num_cpus"]), float(cfg["num_gpus"])
    if num_cpus <= 0 and num_gpus <= 0:
        raise ConfigError(f"pools.{modality}.num_cpus: must be > 0 for a CPU pool, got {num_cpus:g}")
    if num_gpus > 0 and total_gpus <= 0:
        raise ConfigError(f"pools.{modality}.num_gpus={num_gpus:g} but the cluster has no GPUs")
    auto = max(1, math.floor(budget / num_cpus + 1e-9)) if num_cpus else 1
    if num_gpus > 0:
        auto = max(1, min(auto, math.floor(total_gpus / num_gpus)))
    min_size = cfg.get("min_size") or auto
    max_size = cfg.get("max_size") or max(min_size, cfg.get("min_size") or auto)
    if max_size < min_size:
        raise ConfigError(
            f"pools.{modality}.max_size={max_size} is below pools.{modality}.min_size={min_size}"
        )
    return PoolPlan(min_size, max_size, num_cpus, num_gpus, int(cfg["batch_size"]))

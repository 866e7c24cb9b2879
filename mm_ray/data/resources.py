"""Resource policy for ingest: how many actors each modality pool gets and how many CPUs each holds.

All of Ray Data's resource decisions for mm_ray are made here, from the cluster's totals, so a
pipeline that runs on a 64-core cluster also runs on a 2-CPU laptop without deadlocking.

Why budgets matter: a Ray actor holds its ``num_cpus`` for its whole life. If the pools hold
every CPU, the shard-read tasks that feed them can never be scheduled and the pipeline hangs
(seen on a 2-CPU node with two 1-CPU actors). So the plan first reserves CPUs for
``read_slots`` concurrent read tasks (and for any trainer workers sharing the cluster), then
splits the rest between the pools by the measured relative cost of each modality. On a heterogeneous
cluster a pool pinned to some nodes (``pools.<name>.resources``, ``mm_ray.placement``) is budgeted
from those nodes' CPUs only, and the trainer's CPUs are kept only where its workers can run.
``num_cpus`` is a scheduling budget, not a cap: fractional values let more actor processes
than cores run and the OS shares the cores between them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import PoolConfig
from mm_ray.placement import Node, capacity, usable_nodes


@dataclasses.dataclass(frozen=True)
class PoolPlan:
    """The resolved size and resources of one modality's actor pool."""

    min_size: int
    max_size: int
    num_cpus: float
    num_gpus: float
    batch_size: int
    resources: dict[str, float] = dataclasses.field(default_factory=dict)
    """Custom Ray resources per actor (``pools.<name>.resources``): the pool runs where they are declared."""
    max_tasks_in_flight: int | None = None
    """Tasks queued on one actor at most (``pools.<name>.max_tasks_in_flight``; None = Ray Data's default)."""


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
            + "".join(f" {v:g} {k}" for k, v in p.resources.items())
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
    pools: Mapping[str, PoolConfig],
    *,
    total_cpus: float = 0.0,
    total_gpus: float = 0.0,
    nodes: Sequence[Node] | None = None,
    read_num_cpus: float = 0.25,
    read_slots: int = 2,
    reserved_cpus: float = 0.0,
    train_cpus: float = 0.0,
    train_resources: Mapping[str, float] | None = None,
    shares: dict[str, float] | None = None,
    groups: dict[str, tuple[str, ...]] | None = None,
    reads_in_pool: bool = False,
    keys: Mapping[str, str] | None = None,
) -> IngestPlan:
    """Resolve pool sizes. ``pools[name]`` is the pool's settings (``name`` is a modality, or ``fused`` for the
    pool that runs several), ``shares[name]`` its fraction of the CPU budget (the caller
    derives it from the modalities' ``ModalitySpec.cost_share``; default: equal shares). ``keys[name]``: the config
    key of that pool in messages (default ``pools.<name>``).

    ``nodes``: the cluster's alive nodes (``mm_ray.placement.Node``); without them the cluster is one node
    of ``total_cpus``/``total_gpus``. A pool whose ``resources`` name custom resources runs only on the nodes
    that declare them, so it is sized from those nodes' CPUs; pools sharing a set of nodes split its budget by
    their shares. ``reserved_cpus`` is kept free on every set of nodes (e.g. a Tune trial's own driver), and
    ``train_cpus`` (the Train workers) on those the workers can use (``train_resources``), so pools pinned to
    CPU nodes are not shrunk for workers pinned to GPU nodes. Read tasks are not pinned: their CPUs are kept
    free on every set.

    Sizes left as None are derived: ``floor(share * budget / num_cpus)``, at least 1, and no more than the
    pool's custom resources allow. Raises ``ConfigError`` naming the ``pools.*`` (or ``train.*``) key when the
    plan cannot fit the cluster.
    """
    nodes = list(nodes) if nodes is not None else [Node("cluster", {"CPU": total_cpus, "GPU": total_gpus})]
    train_nodes = usable_nodes(nodes, train_resources or {}, "train.worker_resources")
    if shares is None:
        shares = {m: 1.0 / len(pools) for m in pools}
    keys = {m: (keys or {}).get(m, f"pools.{m}") for m in pools}
    node_sets = pools_by_node_set(pools, nodes, keys)
    claimed: list[tuple[frozenset[str], float]] = []
    plans: dict[str, PoolPlan] = {}
    reads = read_num_cpus * read_slots
    for where, members in node_sets:
        ids = frozenset(n.node_id for n in where)
        cpus = sum(n.cpus for n in where)
        trainer = train_cpus if any(n.node_id in ids for n in train_nodes) else 0.0
        earlier = sum(c for other, c in claimed if other & ids)
        budget = cpus - reserved_cpus - trainer - reads - earlier
        if budget <= 0:
            raise ConfigError(
                f"pools: no CPU left for preprocessing actors{_on(members, pools, keys)}: {cpus:g} CPUs, "
                f"{reserved_cpus + trainer:g} reserved for training, {earlier:g} held by other pools and "
                f"{reads:g} for {read_slots} read tasks (pools.read_num_cpus={read_num_cpus:g})"
            )
        total_share = sum(shares[m] for m in members)
        for m in members:
            share = shares[m] / total_share if len(node_sets) > 1 else shares[m]
            plans[m] = _plan_pool(keys[m], pools[m], budget * share, where)
        held = sum(plans[m].max_size * plans[m].num_cpus for m in members)
        if held > budget + 1e-9:
            worst = max(members, key=lambda m: plans[m].max_size * plans[m].num_cpus)
            raise ConfigError(
                f"pools: actor pools need {held:g} CPUs at max size but only {budget:g} of the "
                f"{cpus:g}{_on(members, pools, keys)} are left after read tasks and training; this would "
                f"deadlock. Lower {keys[worst]}.max_size or {keys[worst]}.num_cpus"
            )
        claimed.append((ids, held))
    plans = {m: plans[m] for m in pools}  # the config's order: it is the stages' order
    total = sum(n.cpus for n in nodes)
    return IngestPlan(
        read_num_cpus, plans, total, reserved_cpus + train_cpus, dict(groups or {}), reads_in_pool
    )


def pools_by_node_set(
    pools: Mapping[str, PoolConfig], nodes: Sequence[Node], keys: Mapping[str, str] | None = None
) -> list[tuple[list[Node], list[str]]]:
    """The pools grouped by the nodes they may use (their ``resources``), as ``(nodes, pool names)``; the
    smallest sets (the most pinned pools) first: a pool that may use every node is planned after the pinned
    ones, from what they left, so two pools never count the same CPUs."""
    by_set: dict[frozenset[str], list[str]] = {}
    for m, pool in pools.items():
        key = (keys or {}).get(m, f"pools.{m}")
        where = usable_nodes(nodes, pool.resources, f"{key}.resources")
        by_set.setdefault(frozenset(n.node_id for n in where), []).append(m)
    order = sorted(by_set, key=lambda ids: (sum(n.cpus for n in nodes if n.node_id in ids), sorted(ids)))
    return [([n for n in nodes if n.node_id in ids], by_set[ids]) for ids in order]


def _on(members: list[str], pools: Mapping[str, PoolConfig], keys: Mapping[str, str]) -> str:
    """`` on the nodes of pools.<m>.resources`` for pinned pools (nothing for unpinned ones)."""
    pinned = [m for m in members if pools[m].resources]
    return f" on the nodes of {keys[pinned[0]]}.resources" if pinned else " of the cluster"


def _plan_pool(key: str, pool: PoolConfig, budget: float, nodes: Sequence[Node]) -> PoolPlan:
    """``key``: the pool's config key (``pools.image``); ``budget``: the CPUs its share of its nodes allows."""
    num_cpus, num_gpus = float(pool.num_cpus), float(pool.num_gpus)
    resources = dict(pool.resources)
    total_gpus = sum(n.gpus for n in nodes)
    if num_cpus <= 0 and num_gpus <= 0:
        raise ConfigError(f"{key}.num_cpus: must be > 0 for a CPU pool, got {num_cpus:g}")
    if num_gpus > 0 and total_gpus <= 0:
        where = "the nodes of its resources" if resources else "the cluster"
        raise ConfigError(f"{key}.num_gpus={num_gpus:g} but {where} has no GPUs")
    auto = max(1, math.floor(budget / num_cpus + 1e-9)) if num_cpus else 1
    if num_gpus > 0:
        auto = max(1, min(auto, math.floor(total_gpus / num_gpus)))
    fits = capacity(nodes, resources)
    if fits is not None:
        auto = max(1, min(auto, fits))
    min_size = pool.min_size or auto
    max_size = pool.max_size or max(min_size, pool.min_size or auto)
    if max_size < min_size:
        raise ConfigError(f"{key}.max_size={max_size} is below {key}.min_size={min_size}")
    if fits is not None and max_size > fits:
        raise ConfigError(
            f"{key}.resources: {max_size} actors of {resources} do not fit the {fits} that the "
            f"nodes declaring them hold; this would deadlock. Lower the amounts or {key}.max_size"
        )
    return PoolPlan(
        min_size, max_size, num_cpus, num_gpus, int(pool.batch_size), resources, pool.max_tasks_in_flight
    )

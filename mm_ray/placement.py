"""Which nodes a piece of work may run on, from the custom Ray resources it asks for (pure, no Ray).

On a heterogeneous cluster the preprocessing pools belong on CPU nodes and the Train workers on GPU nodes.
Each node group declares a marker resource (``ray start --resources='{"preprocess": 1}'``, the launcher's
``resources:``, KubeRay's ``rayStartParams.resources``) and the config asks for a sliver of it per actor or
worker (``pools.fused.resources={preprocess: 0.001}``, ``train.worker_resources={train_gpu: 0.001}``): Ray
then schedules that work only where the marker is. The resource plan (``mm_ray.data.resources``) sizes a
pinned pool from the CPUs of those nodes only.

    nodes = [Node("a", {"CPU": 16, "preprocess": 1}), Node("b", {"CPU": 8, "GPU": 1, "train_gpu": 1})]
    usable_nodes(nodes, {"preprocess": 0.001}, "pools.fused.resources")    # [node a]
    usable_nodes(nodes, {"ingest": 0.001}, "pools.fused.resources")        # ConfigError naming the field
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from mm_ray.config.load import ConfigError

BUILT_IN = ("CPU", "GPU", "memory", "object_store_memory")
"""Ray's own resources: a config asks for them with its ``num_cpus``/``num_gpus`` fields, not as custom ones."""


@dataclasses.dataclass(frozen=True)
class Node:
    """One alive node and its total resources (``ray.nodes()``'s ``Resources``)."""

    node_id: str
    resources: Mapping[str, float]

    @property
    def cpus(self) -> float:
        return float(self.resources.get("CPU", 0.0))

    @property
    def gpus(self) -> float:
        return float(self.resources.get("GPU", 0.0))

    def offers(self, wanted: Mapping[str, float]) -> bool:
        """Whether one unit of ``wanted`` (custom resources only) fits this node when it is idle."""
        return all(self.resources.get(name, 0.0) >= amount for name, amount in wanted.items())


def check_custom(wanted: Mapping[str, float], key: str) -> None:
    """``ConfigError`` naming ``key`` for a built-in resource or an amount that is not > 0."""
    for name, amount in wanted.items():
        if name in BUILT_IN:
            raise ConfigError(
                f"{key}: {name!r} is Ray's own resource; set it with num_cpus/num_gpus (pools) or "
                "cpus_per_worker/use_gpu (train), and use this field for custom resources only"
            )
        if not amount > 0:
            raise ConfigError(f"{key}: {name} must be > 0, got {amount!r}")


def usable_nodes(nodes: Sequence[Node], wanted: Mapping[str, float], key: str) -> list[Node]:
    """The nodes where work asking for ``wanted`` can run (all of them when ``wanted`` is empty).

    Raises ``ConfigError`` naming ``key`` when no node offers it: Ray would otherwise keep the actor or worker
    pending forever and the run would hang without a word.
    """
    check_custom(wanted, key)
    found = [node for node in nodes if node.offers(wanted)]
    if not found:
        declared = sorted({r for node in nodes for r in node.resources if r not in BUILT_IN})
        missing = [name for name in wanted if not any(name in node.resources for node in nodes)]
        why = (
            f"no node of the cluster declares {', '.join(map(repr, missing))}"
            if missing
            else f"no single node has {dict(wanted)}"
        )
        raise ConfigError(
            f"{key}: {why} (custom resources on the cluster's nodes: {declared or 'none'}); start the node "
            "group meant for this work with that resource (ray start --resources, the launcher's "
            "resources:, KubeRay's rayStartParams.resources), or leave the field empty"
        )
    return found


def capacity(nodes: Sequence[Node], wanted: Mapping[str, float]) -> int | None:
    """How many actors asking ``wanted`` each fit on ``nodes`` at once by their custom resources (None: no
    limit from them)."""
    if not wanted:
        return None
    return sum(
        min(math.floor(node.resources.get(name, 0.0) / amount + 1e-9) for name, amount in wanted.items())
        for node in nodes
    )


def worker_fits(nodes: Sequence[Node], wanted: Mapping[str, float], cpus: float, gpus: float) -> bool:
    """Whether some node holds one worker's custom resources, CPUs and GPUs together."""
    return any(node.offers(wanted) and node.cpus >= cpus and node.gpus >= gpus for node in nodes)


def check_workers(
    nodes: Sequence[Node], wanted: Mapping[str, float], cpus: float, gpus: float, key: str
) -> None:
    """``ConfigError`` naming ``key`` when no node holds one worker asking ``wanted`` plus ``cpus``/``gpus``:
    Ray Train would wait for its placement group forever."""
    where = usable_nodes(nodes, wanted, key)
    if wanted and not worker_fits(where, wanted, cpus, gpus):
        raise ConfigError(
            f"{key}: the nodes that declare {dict(wanted)} have at most "
            f"{max(n.cpus for n in where):g} CPUs and {max(n.gpus for n in where):g} GPUs, but a worker needs "
            f"{cpus:g} CPUs and {gpus:g} GPUs there (train.cpus_per_worker, train.use_gpu); it would never start"
        )

"""Is a run's storage path reachable from every node of the cluster it runs on?

    warn_if_unshared(cfg.train.storage_path or cfg.output_dir)     # after init_ray(): logs a warning or nothing
    storage_warning(path, ray.nodes())                             # the pure check behind it

On one node any path works. On several, Ray Train and Tune write checkpoints and results from whichever
node a worker or trial runs on, and read them back from others (restores, the Tune driver's results): a
plain local path then scatters a run over the nodes' disks. Shared storage is an object-store URL
(``s3://bucket/runs``, ``gs://...``) or a network file system mounted at the same path on every node;
the second cannot be told apart from a local disk here, hence a warning and not an error. Nodes that all
run on one machine (one address) share its disk, so they get no warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)


def is_local_path(path: str) -> bool:
    """A plain filesystem path or a ``file://`` URL (as opposed to ``s3://``, ``gs://``, ...)."""
    scheme, sep, _ = path.partition("://")
    return not sep or scheme.lower() in ("file", "local")


def alive_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The nodes of ``ray.nodes()`` that are alive (dead ones stay listed for a while)."""
    return [node for node in nodes if node.get("Alive")]


def storage_warning(storage_path: str, nodes: Iterable[Mapping[str, Any]]) -> str | None:
    """The warning to print for ``storage_path`` on a cluster of ``nodes`` (``ray.nodes()``), or None."""
    alive = alive_nodes(nodes)
    hosts = sorted({str(node.get("NodeManagerAddress", "?")) for node in alive})
    # Several nodes on one machine (cluster/local/ on a laptop) share its disk: a local path works there.
    if len(alive) <= 1 or len(hosts) <= 1 or not is_local_path(storage_path):
        return None
    return (
        f"storage path {storage_path!r} is a local path, but the cluster has {len(alive)} alive nodes "
        f"({', '.join(hosts)}): checkpoints and results will be written to whichever node runs the work. "
        "Use shared storage: an object-store URL (train.storage_path=s3://bucket/runs, tune.storage_path=...) "
        "or a network file system mounted at the same path on every node."
    )


def warn_if_unshared(storage_path: str) -> str | None:
    """Log ``storage_warning`` for the connected cluster (a warning); returns it (None: nothing to say)."""
    import ray

    warning = storage_warning(storage_path, ray.nodes())
    if warning:
        logger.warning(warning)
    return warning

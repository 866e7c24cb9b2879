"""Starting or joining Ray, and keeping its output readable.

Every command calls ``init_ray`` once. With no address it starts a local single-node Ray
(the laptop default); with an address (``auto``, ``ray://host:10001``) it joins a cluster.
When Ray is already initialised (tests share one instance per module) it is reused.

Ray Data's per-operator progress bars and execution logs are turned off: the CLI shows one
progress bar of its own and a summary, and Ray's logs stay in Ray's session log directory.
"""

from __future__ import annotations

import logging
import os

from mm_ray.config.schema import RayConfig
from mm_ray.placement import Node

# Settings for a Ray that mm_ray starts itself (a cluster's own settings are left alone):
# - Ray keeps at most ``num_cpus`` idle worker processes and kills the rest after 1 s idle. With
#   actors holding fractional CPUs, every shard-read task then paid a fresh Python + Ray start-up
#   (~1 CPU-second each on 2 cores). Keeping idle workers for a minute removes that churn.
# - Metrics export feeds the dashboard, which a local run does not start; it cost ~3 % of a
#   2-core machine during ingest (measured with `mm-ray bench ingest`).
# - Worker processes import the preprocessing stack before they take work, while Ray starts: the first
#   batch of an ingest no longer waits for each actor's imports (first batch 4.5 s -> 4.1 s with
#   `mm-ray bench ingest`). Ray has no public API for this; `preload_python_modules` is a raylet setting
#   (the `--worker-preload-modules` of Ray's default_worker.py).
LOCAL_SYSTEM_CONFIG = {
    "idle_worker_killing_time_threshold_ms": 60_000,
    "enable_metrics_collection": False,
    "preload_python_modules": [
        "numpy",
        "pyarrow",
        "PIL.Image",
        "soundfile",
        "soxr",
        "tokenizers",
        "mm_ray.data.stages",
    ],
}


def init_ray(ray_config: RayConfig | None = None) -> None:
    """Connect to (or start) Ray as ``ray_config`` (a config's ``ray`` section) says, and apply mm_ray's Ray Data
    defaults. Every entry point calls it the same way: ``init_ray(cfg.ray)``; a running Ray is reused.

    ``address`` None starts a local single-node Ray, unless ``RAY_ADDRESS`` is set: a command submitted
    as a Ray job (``mm-ray submit``) finds its cluster's address there and joins that cluster.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    rc = ray_config or RayConfig()
    address = rc.address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        kwargs: dict = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address:
            kwargs["address"] = address
        else:
            # A local Ray turns token auth on for itself and says so at WARNING; that is Ray's business, not
            # the user's (a cluster joined by address keeps its own settings and messages).
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
                logging.ERROR
            )
            # The dashboard and its agent cost CPU that a 2-core laptop needs for decoding.
            kwargs["include_dashboard"] = False
            kwargs["num_cpus"] = rc.num_cpus
            kwargs["_system_config"] = LOCAL_SYSTEM_CONFIG
            if rc.object_store_memory_mb:
                kwargs["object_store_memory"] = rc.object_store_memory_mb * 1024 * 1024
        ray.init(**kwargs)
    configure_data_context()


def configure_data_context(target_block_mb: int = 16) -> None:
    """Quiet, streaming-friendly Ray Data settings for the current driver."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # Small blocks: the first model-ready batch arrives after one block, not after a whole shard,
    # and per-modality stages overlap instead of waiting on 128 MB blocks.
    ctx.target_max_block_size = target_block_mb * 1024 * 1024
    # Per-task memory polling (a /proc smaps read per task per second) is only used for Ray Data's
    # own stats; turning it off is worth a few percent of throughput on small machines.
    ctx.memory_usage_poll_interval_s = None
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # It would say "Progress bars disabled" once per run: deliberate here, the CLI draws its own bar.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    logging.getLogger("ray.train").setLevel(logging.WARNING)


def cluster_nodes() -> list[Node]:
    """The connected cluster's alive nodes and their total resources (for placement and the resource plan)."""
    import ray

    return [Node(n["NodeID"], dict(n.get("Resources") or {})) for n in ray.nodes() if n.get("Alive")]


def cluster_resources() -> tuple[float, float]:
    """(CPUs, GPUs) of the connected cluster."""
    import ray

    res = ray.cluster_resources()
    return float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))

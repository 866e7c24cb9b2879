"""Intra-op thread pools capped to a decoding actor's CPUs: called where every stage is built in its actor.

    cap_threads()        # in ModalityStage / FusedStage / ShardStage / DroppingColumns.__init__ (once per process)
    thread_report()      # what the pools are now (``mm-ray bench ingest`` asks an actor for it)

Why: a Ray worker process imports numpy (OpenBLAS) and pyarrow before it becomes an actor, and those size
their pools to every core of the node; Ray sets ``OMP_NUM_THREADS`` from the actor's CPUs only when the actor
starts (``set_omp_num_threads_if_unset``), too late for a pool already made. Each decoding actor then runs one
thread per core in its matmuls (``preprocess/mel.py``) and Arrow kernels, and on a node with as many actors as
cores those threads only contend. A DataLoader worker sets one torch thread itself; this is the same for
actors: every pool limited to the actor's CPUs, rounded up (at least 1).
"""

from __future__ import annotations

import functools
import math
import os
import sys
from typing import Any


def actor_cpus() -> float:
    """The CPUs Ray assigned to this process's actor or task (0 outside Ray, or for a process holding none)."""
    if "ray" not in sys.modules:
        return 0.0
    import ray

    if not ray.is_initialized():
        return 0.0
    return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))


def threads_for(cpus: float) -> int:
    """Threads for a process holding ``cpus`` CPUs: rounded up, at least one."""
    return max(1, math.ceil(cpus - 1e-9))


@functools.cache
def cap_threads(threads: int | None = None) -> int:
    """Limit this process's BLAS/OpenMP pools (``threadpoolctl``), pyarrow's CPU pool and, when torch is already
    imported, torch's intra-op threads to ``threads`` (default: ``threads_for(actor_cpus())``; outside a Ray
    actor or task holding CPUs, nothing is changed and 0 returned: a stage built in a driver or a test leaves its
    process alone). Returns the limit. Runs once per process and limit (later calls return at once): stages
    nest (a ``ShardStage`` builds a ``FusedStage`` builds ``ModalityStage`` s), and each may be the one an
    actor is made of."""
    from threadpoolctl import threadpool_limits

    if threads is None:
        cpus = actor_cpus()
        if not cpus:
            return 0
        threads = threads_for(cpus)
    n = threads
    threadpool_limits(limits=n)  # applies now; kept for the process's life (not used as a context manager)
    import pyarrow

    pyarrow.set_cpu_count(n)
    if "torch" in sys.modules:  # importing torch only to cap it would cost an actor a second of start-up
        sys.modules["torch"].set_num_threads(n)
    # Libraries imported later (torch, an OpenMP build of something) read these when they start their pools.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(n)
    return n


def thread_report() -> dict[str, Any]:
    """This process's thread pools: its CPUs, torch's intra-op threads (None: torch not imported), pyarrow's CPU
    count, ``threadpoolctl.threadpool_info()`` (one entry per BLAS/OpenMP library, with ``num_threads``) and the
    process's OS thread count. The fields of ``mm_ray.bench.records.ThreadPools``."""
    import psutil
    import pyarrow
    from threadpoolctl import threadpool_info

    torch = sys.modules.get("torch")
    pools = [
        {k: v for k, v in info.items() if k in ("user_api", "internal_api", "prefix", "num_threads")}
        for info in threadpool_info()
    ]
    return {
        "cpus": actor_cpus(),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "pyarrow_cpus": pyarrow.cpu_count(),
        "threadpools": pools,
        "os_threads": psutil.Process().num_threads(),
    }

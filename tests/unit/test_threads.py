"""Thread caps inside a decoding actor (``mm_ray.data.threads``), checked in a fresh interpreter so that the
test process keeps its own pools."""

from __future__ import annotations

import json
import subprocess
import sys

from mm_ray.data.threads import threads_for

PROBE = """
import json, numpy, pyarrow, torch
from threadpoolctl import threadpool_info
from mm_ray.data.threads import cap_threads, thread_report
outside = cap_threads()  # not in a Ray actor: nothing changes
before = [p["num_threads"] for p in threadpool_info()]
limit = cap_threads(1)
print(json.dumps({"outside": outside, "before": before, "limit": limit, "report": thread_report()}))
"""


def test_threads_follow_the_actors_cpus_rounded_up() -> None:
    assert [threads_for(c) for c in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)] == [1, 1, 1, 1, 2, 2]


def test_cap_limits_blas_pyarrow_and_torch_and_leaves_a_process_outside_ray_alone() -> None:
    # Pools as wide as the machine allows (a worker process that preloaded numpy before Ray set its CPUs).
    env = {"PATH": "", "OMP_NUM_THREADS": "64", "OPENBLAS_NUM_THREADS": "64"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["outside"] == 0 and seen["before"]
    report = seen["report"]
    assert seen["limit"] == 1
    assert report["torch_threads"] == 1 and report["pyarrow_cpus"] == 1
    assert report["threadpools"] and all(p["num_threads"] == 1 for p in report["threadpools"])
    assert report["cpus"] == 0.0  # not in a Ray actor

"""The benchmark's cache, preprocessed in a fresh interpreter: every mode must start with no Ray running.

    run_spec("mm_ray.bench.cache_child", {"config": path_or_None, "overrides": [...], "urls": [...],
             "cache": "runs/bench/train_cache"}, dict(os.environ), what="preprocessing")

The config overrides (storage credentials among them) travel in the spec file, which ``run_spec`` writes into a
private temporary directory, never in the child's command line: any user of the machine can read a process's
arguments (``ps``, ``/proc/PID/cmdline``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _worker_main(spec_path: str) -> None:
    from mm_ray.config.load import load_config
    from mm_ray.data.build import build_cache

    spec = json.loads(Path(spec_path).read_text())
    cache = build_cache(load_config(spec["config"], spec["overrides"]), spec["urls"], spec["cache"])
    Path(spec["out"]).write_text(json.dumps({"uri": cache.uri}))


if __name__ == "__main__":
    _worker_main(sys.argv[1])

"""Watch a process tree: peak memory (PSS) and CPU seconds per kind of process.

PSS (proportional set size) splits shared pages between the processes that map them, so
Ray's shared-memory object store is counted once rather than once per worker; that makes the
sum over a process tree comparable between a DataLoader run and a Ray run.

Usage::

    with TreeMonitor(os.getpid()) as mon:
        run_the_thing()
    mon.peak_pss_mb, mon.cpu_by_group()   # {"driver": 3.1, "ray::MapWorker(...)": 10.2, "raylet": 1.0, ...}

``run_spec`` runs one benchmark mode in a fresh interpreter (the modes' ``python -m`` entry points).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, TypeVar

import psutil

from mm_ray.bench.records import IngestRun, TrainRun


def process_group(proc: psutil.Process, root_pid: int) -> str:
    """A readable group name: the driver, Ray daemons by name, Ray workers by their task/actor title."""
    if proc.pid == root_pid:
        return "driver"
    try:
        cmd = proc.cmdline()
    except (psutil.Error, OSError):
        return "exited"
    title = cmd[0] if cmd else proc.name()
    if title.startswith("ray::"):
        return title.split(" ")[0]
    for daemon in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "agent"):
        if any(daemon in part for part in cmd[:3]):
            return daemon
    return proc.name()


class TreeMonitor:
    """Samples the tree under ``root_pid`` every ``interval`` seconds in a background thread."""

    def __init__(self, root_pid: int, interval: float = 1.0):
        self._root = psutil.Process(root_pid)
        self._interval = interval
        self._stop = threading.Event()
        self._cpu: dict[int, tuple[str, float]] = {}
        self._groups: dict[int, str] = {}
        self._start_cpu: dict[int, float] = {}
        self.peak_pss_mb = 0.0
        self.peak_rss_mb = 0.0
        """Peak of the tree's summed RSS: shared pages (the object store) counted once per process mapping them."""
        self._peak_by_pid: dict[int, tuple[float, str]] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self) -> list[psutil.Process]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> None:
        total = rss_total = 0
        for proc in self._procs():
            try:
                times = proc.cpu_times()
                cpu = times.user + times.system
                memory = proc.memory_full_info()
                pss = memory.pss
            except (psutil.Error, OSError):
                continue
            total += pss
            rss_total += memory.rss
            # Re-read the name each time: a Ray worker renames itself (ray::IDLE -> ray::MapWorker...)
            # after it starts; its last name is the most telling.
            self._groups[proc.pid] = process_group(proc, self._root.pid)
            if pss / 2**20 > self._peak_by_pid.get(proc.pid, (0.0, ""))[0]:
                # The name it had at its peak: a worker back to ray::IDLE says nothing of what swelled it.
                self._peak_by_pid[proc.pid] = (pss / 2**20, self._groups[proc.pid])
            # Work the driver did before monitoring started (imports) is not counted.
            self._start_cpu.setdefault(proc.pid, cpu if proc.pid == self._root.pid else 0.0)
            self._cpu[proc.pid] = (self._groups[proc.pid], cpu)
        self.peak_pss_mb = max(self.peak_pss_mb, total / 2**20)
        self.peak_rss_mb = max(self.peak_rss_mb, rss_total / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def largest_process(self) -> tuple[str, float]:
        """``(group, MB)`` of the single process whose PSS peaked highest while monitored."""
        mb, group = max(self._peak_by_pid.values())
        return group, mb

    def peak_by_group(self) -> dict[str, float]:
        """MB per process group: the sum of its processes' own PSS peaks (where the memory went), largest first."""
        out: dict[str, float] = {}
        for mb, group in self._peak_by_pid.values():
            out[group] = out.get(group, 0.0) + mb
        return dict(sorted(((g, round(mb, 1)) for g, mb in out.items()), key=lambda kv: -kv[1]))

    def cpu_by_group(self) -> dict[str, float]:
        """CPU seconds (user + system) spent per process group while monitored."""
        out: dict[str, float] = {}
        for pid, (group, cpu) in self._cpu.items():
            out[group] = out.get(group, 0.0) + cpu - self._start_cpu.get(pid, 0.0)
        return dict(sorted(((g, round(s, 2)) for g, s in out.items()), key=lambda kv: -kv[1]))

    def __enter__(self) -> TreeMonitor:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


Run = TypeVar("Run", IngestRun, TrainRun)


def median_run(runs: list[Run]) -> Run:
    """Of one mode's repeated runs, the one with the median steady samples/s (every run's rate kept in it)."""
    ordered = sorted(runs, key=lambda r: r.steady_samples_per_s)
    rates = tuple(r.steady_samples_per_s for r in runs)
    return dataclasses.replace(ordered[len(ordered) // 2], steady_samples_per_s_runs=rates)


def run_spec(module: str, spec: dict[str, Any], env: dict[str, str], *, what: str) -> dict[str, Any]:
    """Run ``python -m module SPEC_JSON`` in a fresh interpreter and return the JSON it writes.

    The child reads the spec file (``spec`` plus ``"out"``, where it writes its result). Each benchmark mode
    runs this way so that one mode's memory, threads and Ray cannot disturb another's. Raises
    ``RuntimeError`` naming ``what`` with the end of the child's stderr when it fails.
    """
    with tempfile.TemporaryDirectory() as tmp:
        spec = {**spec, "out": str(Path(tmp) / "result.json")}
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        command = [sys.executable, "-m", module, str(spec_path)]
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{proc.stderr[-4000:]}")
        return json.loads(Path(spec["out"]).read_text())

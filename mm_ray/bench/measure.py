"""Watch a process tree: peak memory (PSS) and CPU seconds per kind of process.

PSS (proportional set size) splits shared pages between the processes that map them, so
Ray's shared-memory object store is counted once rather than once per worker; that makes the
sum over a process tree comparable between a DataLoader run and a Ray run.

Usage::

    with TreeMonitor(os.getpid()) as mon:
        run_the_thing()
    mon.peak_pss_mb, mon.cpu_by_group()   # {"driver": 3.1, "ray::MapWorker(...)": 10.2, "raylet": 1.0, ...}
    mon.cpu_split_by_group()              # {"ray::MapWorker(...)": CpuSplit(startup=4.8, steady=9.1), ...}

    with TreeMonitor(os.getpid(), memory=False) as mon:   # CPU and titles only: a time measurement
        ...

Reading PSS is not free: the kernel walks every page table of every process (``/proc/PID/smaps_rollup``), and
with a Ray Train run's ~20 processes, once a second, that was a fifth of a core, spent in the driver, taken
from the processes being timed. A mode that measures time only passes ``memory=False``. The monitor's own CPU
is reported apart from the driver's (group ``MONITOR``), so a table never charges the sampler to the code
under test.

Start-up vs steady: a Ray worker's CPU before its first task (its interpreter, Ray's own imports, the actor's
constructor: the decoders' imports and set-up) is start-up, what it spends from its first task on is steady.
A process is in a task while Ray titles it ``ray::<actor>.<method>`` (or ``ray::<task>``); the monitor looks at
titles every ``cpu_interval`` seconds, so each process's split is exact to that interval. Forked helpers (a
DataLoader's workers, the floor's pool) start with their first task: all their CPU is steady.

``run_spec`` runs one benchmark mode in a fresh interpreter (the modes' ``python -m`` entry points).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

import psutil

from mm_ray.bench.records import CpuSplit, IngestRun, TrainRun


def task_state(title: str) -> str:
    """What a process titled ``title`` is doing: ``"other"`` (not a Ray worker), ``"idle"`` (``ray::IDLE``: not
    handed work yet), ``"init"`` (building its actor: ``ray::MapWorker(...).__init__``), ``"method"`` (running
    one of its actor's methods: ``ray::MapWorker(MapBatches(X)).submit``), ``"named"`` (an actor between
    methods, or a task worker titled by its task: ``ray::MapWorker(MapBatches(X))``, ``ray::ReadRange``)."""
    if not title.startswith("ray::"):
        return "other"
    name = title[len("ray::") :]
    if name == "IDLE":
        return "idle"
    if name.endswith(".__init__"):
        return "init"
    after_repr = name.rsplit(")", 1)[-1]  # what follows an actor's repr such as MapWorker(MapBatches(X))
    return "method" if "." in after_repr else "named"


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
        title = title.split(" ")[0]
        # An actor by its own title, whichever method it runs at the moment (.submit, .__init__).
        return title.rsplit(".", 1)[0] if task_state(title) in ("method", "init") else title
    for daemon in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "agent"):
        if any(daemon in part for part in cmd[:3]):
            return daemon
    return proc.name()


MONITOR = "bench monitor"
"""The group the monitor's own CPU is reported under (taken out of the driver's, whose process it runs in)."""


class TreeMonitor:
    """Samples the tree under ``root_pid`` in a background thread: CPU and titles every ``cpu_interval``
    seconds, memory (PSS) every ``interval`` seconds unless ``memory=False`` (then ``peak_pss_mb`` and
    ``peak_rss_mb`` stay ``None``)."""

    def __init__(
        self, root_pid: int, interval: float = 1.0, cpu_interval: float = 0.25, *, memory: bool = True
    ):
        self._root = psutil.Process(root_pid)
        self._interval = interval
        self._cpu_interval = cpu_interval
        self._memory = memory
        self.own_cpu_s = 0.0
        """CPU seconds the monitor itself spent sampling (in the root process when it is the driver)."""
        self._startup_cpu: dict[int, float] = {}
        """Per Ray worker: its CPU at the last look before its first task (``task_state``)."""
        self._working: set[int] = set()
        self._actors: set[int] = set()
        self._stop = threading.Event()
        self._cpu: dict[int, tuple[str, float]] = {}
        self._groups: dict[int, str] = {}
        self._start_cpu: dict[int, float] = {}
        self.peak_pss_mb: float | None = 0.0 if memory else None
        self.peak_rss_mb: float | None = 0.0 if memory else None
        """Peak of the tree's summed RSS: shared pages (the object store) counted once per process mapping them."""
        self._peak_by_pid: dict[int, tuple[float, str]] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self) -> list[psutil.Process]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []

    def look(self) -> None:
        """CPU and title of every process (cheap: the start-up/steady split needs it often)."""
        for proc in self._procs():
            try:
                times = proc.cpu_times()
                cmd = proc.cmdline()
            except (psutil.Error, OSError):
                continue
            self._note_cpu(proc, times.user + times.system, cmd[0] if cmd else "")

    def _note_cpu(self, proc: psutil.Process, cpu: float, title: str) -> None:
        pid = proc.pid
        self._groups[pid] = process_group(proc, self._root.pid)
        # Work the driver did before monitoring started (imports) is not counted.
        self._start_cpu.setdefault(pid, cpu if pid == self._root.pid else 0.0)
        self._cpu[pid] = (self._groups[pid], cpu)
        state = task_state(title)
        if pid in self._working or state == "other":
            return
        if state == "init":
            self._actors.add(pid)
        # A named title is a task's, unless the worker was seen building an actor (then it is between methods).
        if state == "method" or (state == "named" and pid not in self._actors):
            self._working.add(pid)
        else:
            self._startup_cpu[pid] = cpu - self._start_cpu[pid]

    def _timed(self, what) -> None:
        started = time.thread_time()
        what()
        self.own_cpu_s += time.thread_time() - started

    def sample(self) -> None:
        """Memory (PSS, which reads every mapping: slower), CPU and titles of every process; CPU and titles only
        when the monitor was made with ``memory=False``."""
        if not self._memory:
            self.look()
            return
        total = rss_total = 0
        for proc in self._procs():
            try:
                times = proc.cpu_times()
                cpu = times.user + times.system
                memory = proc.memory_full_info()
                pss = memory.pss
                cmd = proc.cmdline()
            except (psutil.Error, OSError):
                continue
            total += pss
            rss_total += memory.rss
            # Re-read the name each time: a Ray worker renames itself (ray::IDLE -> ray::MapWorker...)
            # after it starts; its last name is the most telling.
            self._note_cpu(proc, cpu, cmd[0] if cmd else "")
            if pss / 2**20 > self._peak_by_pid.get(proc.pid, (0.0, ""))[0]:
                # The name it had at its peak: a worker back to ray::IDLE says nothing of what swelled it.
                self._peak_by_pid[proc.pid] = (pss / 2**20, self._groups[proc.pid])
        self.peak_pss_mb = max(self.peak_pss_mb, total / 2**20)
        self.peak_rss_mb = max(self.peak_rss_mb, rss_total / 2**20)

    def _run(self) -> None:
        every = max(1, round(self._interval / self._cpu_interval))
        tick = 0
        while not self._stop.wait(self._cpu_interval):
            tick += 1
            self._timed(self.sample if tick % every == 0 else self.look)

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

    def processes_by_group(self) -> dict[str, int]:
        """How many distinct processes of each group were seen (e.g. the decoding actors a run started)."""
        return dict(collections.Counter(self._groups.values()))

    def cpu_by_group(self) -> dict[str, float]:
        """CPU seconds (user + system) spent per process group while monitored."""
        out: dict[str, float] = {}
        for pid, (group, cpu) in self._cpu.items():
            out[group] = out.get(group, 0.0) + cpu - self._start_cpu.get(pid, 0.0)
        if "driver" in out:  # the monitor's CPU apart from the driver's, the process it runs in
            out["driver"] = max(0.0, out["driver"] - self.own_cpu_s)
            out[MONITOR] = self.own_cpu_s
        return dict(sorted(((g, round(s, 2)) for g, s in out.items()), key=lambda kv: -kv[1]))

    def cpu_split_by_group(self) -> dict[str, CpuSplit]:
        """CPU seconds per process group split into start-up (a Ray worker's before its first task) and steady
        (the rest; all of a process that is not a Ray worker), largest total first."""
        out: dict[str, tuple[float, float]] = {}
        for pid, (group, cpu) in self._cpu.items():
            used = cpu - self._start_cpu.get(pid, 0.0)
            # A Ray worker seen only before its first task (never given one) spent it all on start-up.
            startup = (
                min(used, self._startup_cpu.get(pid, 0.0))
                if pid in self._working
                else (used if pid in self._startup_cpu else 0.0)
            )
            before = out.get(group, (0.0, 0.0))
            out[group] = (before[0] + startup, before[1] + used - startup)
        if "driver" in out:  # the driver's CPU is all steady (not a Ray worker): so is the monitor's in it
            startup, steady = out["driver"]
            out["driver"] = (startup, max(0.0, steady - self.own_cpu_s))
            out[MONITOR] = (0.0, self.own_cpu_s)
        ordered = sorted(out.items(), key=lambda kv: -sum(kv[1]))
        return {g: CpuSplit(round(a, 2), round(b, 2)) for g, (a, b) in ordered}

    def __enter__(self) -> TreeMonitor:
        self._timed(self.sample)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._timed(self.sample)


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

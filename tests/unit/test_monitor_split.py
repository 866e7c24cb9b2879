"""The benchmark monitor's start-up/steady split: what a process title says a Ray worker is doing, and how CPU
seen before a worker's first task is counted as its start-up (no Ray: titles and CPU readings fed by hand)."""

from __future__ import annotations

import os

import pytest

from mm_ray.bench.measure import MONITOR, TreeMonitor, task_state


@pytest.mark.parametrize(
    ("title", "state"),
    [
        ("ray::IDLE", "idle"),
        ("ray::MapWorker(MapBatches(ShardStage)).__init__", "init"),
        ("ray::MapWorker(MapBatches(ShardStage)).submit", "method"),
        ("ray::MapWorker(MapBatches(ShardStage))", "named"),
        ("ray::_StatsActor.register_dataset", "method"),
        ("ray::ReadRange->MapBatches(f)", "named"),
        ("/usr/bin/python3", "other"),
        ("raylet", "other"),
    ],
)
def test_titles_tell_what_a_ray_worker_is_doing(title: str, state: str) -> None:
    assert task_state(title) == state


class _Proc:
    """Stands in for a psutil.Process of a child: a pid and a command line (its title)."""

    def __init__(self, pid: int, title: str) -> None:
        self.pid = pid
        self._title = title

    def cmdline(self) -> list[str]:
        return [self._title]

    def name(self) -> str:
        return self._title


def test_an_actors_cpu_before_its_first_task_is_start_up() -> None:
    mon = TreeMonitor(os.getpid())
    group = "ray::MapWorker(MapBatches(ShardStage))"
    looks = [  # (title, CPU seconds so far) as the monitor would see them every quarter second
        ("ray::IDLE", 0.8),
        ("ray::MapWorker(MapBatches(ShardStage)).__init__", 2.0),
        (group, 2.9),  # constructed, waiting for its first task: still start-up
        (group + ".submit", 3.4),  # first seen in a task: start-up ended at the look before (2.9)
        (group, 7.0),
        (group + ".submit", 9.5),
    ]
    for title, cpu in looks:
        mon._note_cpu(_Proc(101, title), cpu, title)
    # A task worker (read task) titled by its task from its first look on: no start-up seen.
    for title, cpu in [("ray::IDLE", 1.0), ("ray::ReadShards", 1.5), ("ray::ReadShards", 4.0)]:
        mon._note_cpu(_Proc(102, title), cpu, title)
    # A worker that never got a task: all of it is start-up.
    for title, cpu in [("ray::IDLE", 1.2), ("ray::IDLE", 2.5)]:
        mon._note_cpu(_Proc(103, title), cpu, title)
    split = mon.cpu_split_by_group()
    assert (split[group].startup, split[group].steady) == (2.9, 6.6)
    assert (split["ray::ReadShards"].startup, split["ray::ReadShards"].steady) == (1.0, 3.0)
    assert (split["ray::IDLE"].startup, split["ray::IDLE"].steady) == (2.5, 0.0)
    # The split adds up to the plain CPU count.
    totals = mon.cpu_by_group()
    assert all(abs(s.startup + s.steady - totals[g]) < 1e-6 for g, s in split.items())


def test_a_time_only_monitor_never_reads_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """``memory=False`` (the validation modes): no PSS read, which walks every page table of the tree."""
    import psutil

    reads = []
    real = psutil.Process.memory_full_info

    def counting(self: psutil.Process):
        reads.append(self.pid)
        return real(self)

    monkeypatch.setattr(psutil.Process, "memory_full_info", counting)
    with TreeMonitor(os.getpid(), interval=0.02, cpu_interval=0.01, memory=False) as mon:
        sum(i * i for i in range(300_000))
    assert reads == []
    assert mon.peak_pss_mb is None and mon.peak_rss_mb is None
    assert mon.cpu_by_group()["driver"] > 0

    with TreeMonitor(os.getpid(), interval=0.02, cpu_interval=0.01) as mon:  # the default samples memory
        sum(i * i for i in range(300_000))
    assert reads and mon.peak_pss_mb > 0


def test_the_monitors_own_cpu_is_reported_apart_from_the_drivers() -> None:
    mon = TreeMonitor(os.getpid())
    for cpu in (1.0, 11.0):  # the driver's CPU at the first look (not counted) and at the last
        mon._note_cpu(_Proc(os.getpid(), "python"), cpu, "python")
    mon.own_cpu_s = 2.5  # what the sampling thread spent in the driver's process, timed with thread_time
    assert mon.cpu_by_group() == {"driver": 7.5, MONITOR: 2.5}
    split = mon.cpu_split_by_group()
    assert (split["driver"].startup, split["driver"].steady) == (0.0, 7.5)
    assert (split[MONITOR].startup, split[MONITOR].steady) == (0.0, 2.5)


def test_a_real_monitor_times_itself() -> None:
    with TreeMonitor(os.getpid(), interval=0.02, cpu_interval=0.01) as mon:
        sum(i * i for i in range(600_000))
    groups = mon.cpu_by_group()
    assert mon.own_cpu_s > 0 and groups[MONITOR] == round(mon.own_cpu_s, 2)

"""Finding Ray's worker processes by what they run, to kill them from outside as a crash would.

    for proc in ray_processes("RayTrainWorker"):     # a Train worker actor's process
        proc.send_signal(signal.SIGKILL)

Ray titles a worker process ``ray::<task or actor class>`` while it runs one (``ray::IDLE`` otherwise);
``psutil`` reads the title from the process's command line.
"""

from __future__ import annotations

import os

import psutil


def ray_processes(title: str) -> list[psutil.Process]:
    """This user's Ray worker processes whose title starts with ``ray::<title>``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        cmd = proc.info["cmdline"] or []
        if cmd and cmd[0].startswith(f"ray::{title}") and proc.info["uids"].real == os.getuid():
            found.append(proc)
    return found


def ray_titles() -> list[str]:
    """The titles of this user's Ray worker processes (for a failure message)."""
    titles = set()
    for proc in psutil.process_iter(["cmdline", "uids"]):
        cmd = proc.info["cmdline"] or []
        if cmd and cmd[0].startswith("ray::") and proc.info["uids"].real == os.getuid():
            titles.add(cmd[0])
    return sorted(titles)

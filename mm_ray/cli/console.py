"""What a user of ``mm-ray`` sees: the project's output, not Ray's internal noise.

Ray prints a few lines that say nothing to a user and that no public setting turns off:

- ``core_worker.cc: Actor with class name: 'MapWorker(...)' ... has constructor arguments in the object
  store and max_restarts > 0``: written by Ray's C++ core for every Ray Data actor pool, whatever its
  arguments (ray-project/ray#57733, open); it goes straight to file descriptor 2.
- ``(raylet) WARNING: N PYTHON worker processes have been started on node ...``: the raylet's warning
  about fractional-CPU actors, which is how mm_ray budgets a 2-core laptop on purpose; Ray's driver prints
  it on ``sys.stdout`` (ray-project/ray#3644).

``quiet_ray_noise()`` drops exactly those lines; every other byte passes through unchanged, progress bars
included. ``MM_RAY_SHOW_RAY_NOISE=1`` turns the filter off. The library itself prints nothing, so this only
concerns the command line.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import sys
import threading

NOISE = (
    re.compile(
        rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store"
    ),
    re.compile(rb"PYTHON worker processes have been started on node"),
)
"""Ray's lines that ``mm-ray`` hides (see the module docstring)."""

_installed = False
_stderr_was_tty = sys.stderr.isatty()


def stderr_is_terminal() -> bool:
    """Whether the process's stderr was a terminal before any filtering (progress bars draw only there)."""
    return _stderr_was_tty


def is_noise(line: bytes) -> bool:
    return any(pattern.search(line) for pattern in NOISE)


class _FilteredText(io.TextIOBase):
    """A text stream that forwards to ``target`` all but the noise lines (Python-level ``sys.stdout``)."""

    def __init__(self, target) -> None:
        self._target = target
        self._partial = ""

    def write(self, text: str) -> int:
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()
        kept = [line for line in lines if not is_noise(line.encode(errors="replace"))]
        if kept:
            self._target.write("\n".join(kept) + "\n")
        # A partial line is held only while it may still become a noise line (Ray's start with "(raylet)").
        if self._partial and not self._partial.lstrip("\x1b[0123456789m").startswith("(raylet)"):
            self._target.write(self._partial)
            self._partial = ""
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._target.encoding


def _pump(read_fd: int, write_fd: int) -> None:
    """Copy ``read_fd`` to ``write_fd`` line by line, dropping noise lines; partial lines go on at once
    unless they look like the start of a C++ log line (``[2026-...``)."""
    pending = b""
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not is_noise(line))
        if pending and not pending.startswith(b"["):
            out, pending = out + pending, b""
        if out:
            os.write(write_fd, out)
    if pending and not is_noise(pending):
        os.write(write_fd, pending)


def quiet_ray_noise() -> None:
    """Filter ``NOISE`` out of this process's stdout (Python level) and stderr (file descriptor level)."""
    global _installed
    if _installed or os.environ.get("MM_RAY_SHOW_RAY_NOISE"):
        return
    _installed = True
    sys.stdout = _FilteredText(sys.stdout)
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
    except (OSError, ValueError, io.UnsupportedOperation):  # no real fd 2 (an embedding host): leave it
        return
    pump = threading.Thread(target=_pump, args=(read_fd, original), name="mm_ray-stderr", daemon=True)
    pump.start()

    def restore() -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last writer closes: the pump drains it and ends
        pump.join(timeout=5)

    atexit.register(restore)

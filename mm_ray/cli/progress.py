"""One progress bar for long commands, fed by polling a counter from a background thread.

Usage::

    with PolledProgress("preprocess", poll=lambda: ingest.summary()["samples_read"], total=2000):
        ingest.dataset.write_parquet(...)      # blocks; the bar keeps moving meanwhile
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from tqdm import tqdm


class PolledProgress:
    """A tqdm bar (stderr) updated every ``interval`` seconds from ``poll()``; silent when not a TTY
    unless ``force`` is set, so logs and CI output stay readable."""

    def __init__(
        self,
        desc: str,
        poll: Callable[[], int],
        total: int | None = None,
        unit: str = "sample",
        interval: float = 0.5,
        force: bool = False,
    ):
        self._poll = poll
        self._interval = interval
        self._stop = threading.Event()
        disable = not (force or sys.stderr.isatty())
        self._bar = tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=True)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _update(self) -> None:
        try:
            value = int(self._poll())
        except Exception:
            return
        if value > self._bar.n:
            self._bar.update(value - self._bar.n)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._update()

    def __enter__(self) -> PolledProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self._bar.close()


def callback_bar(desc: str, total: int, unit: str = "sample") -> tuple[Callable[[int, int], None], tqdm]:
    """A tqdm bar and a ``progress(done, total)`` callback that moves it (for code that reports progress)."""
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def progress(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return progress, bar

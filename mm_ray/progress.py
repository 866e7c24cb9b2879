"""How long-running library calls show progress without printing: the caller passes a factory.

    def bar(desc: str, poll: Callable[[], int], total: int | None) -> ContextManager: ...
    mm_ray.build_cache(cfg, shards, out, progress=bar)   # the bar polls the samples read so far

``mm-ray`` passes one that draws a tqdm bar on a terminal; ``None`` (the default everywhere) shows nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

ProgressFactory = Callable[[str, Callable[[], int], "int | None"], contextlib.AbstractContextManager]
"""``progress(desc, poll, total)``: entered around a long stream; ``poll()`` returns the units done so far."""


def watch(
    progress: ProgressFactory | None, desc: str, poll: Callable[[], int], total: int | None = None
) -> contextlib.AbstractContextManager:
    """``progress(desc, poll, total)``, or a context that does nothing when no factory was given."""
    return progress(desc, poll, total) if progress is not None else contextlib.nullcontext()

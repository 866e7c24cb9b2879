"""Helpers shared by the preprocessors for the batch contract of ``mm_ray.columns``."""

from __future__ import annotations

import numpy as np

from mm_ray.columns import REJECT, REJECT_DETAIL


def reject_columns(batch: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Writable object arrays for REJECT / REJECT_DETAIL, keeping reasons set by earlier stages.

    Always copied to object dtype: arrays from Ray can be read-only, and a fixed-width ``<U``
    array would silently truncate the strings written into it.
    """
    reject = batch.get(REJECT)
    detail = batch.get(REJECT_DETAIL)
    reject = np.full(n, "", dtype=object) if reject is None else np.array(reject, dtype=object)
    detail = np.full(n, "", dtype=object) if detail is None else np.array(detail, dtype=object)
    return reject, detail

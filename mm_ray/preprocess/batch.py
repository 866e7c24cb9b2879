"""Helpers shared by the preprocessors for the batch contract of ``mm_ray.columns``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mm_ray.columns import REJECT, REJECT_DETAIL
from mm_ray.quarantine import SampleError


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


def decode_rows(
    raw: np.ndarray, reject: np.ndarray, detail: np.ndarray, decode_one: Callable[[int, bytes], None]
) -> np.ndarray:
    """Call ``decode_one(i, data)`` for every row with data that no stage has rejected yet.

    A ``SampleError`` marks that row in ``reject``/``detail`` and decoding goes on with the next
    row. Returns the presence mask: True where ``decode_one`` succeeded.
    """
    has = np.zeros(len(raw), dtype=bool)
    for i, data in enumerate(raw):
        if data is None or reject[i]:
            continue
        try:
            decode_one(i, data)
        except SampleError as err:
            reject[i], detail[i] = err.code, err.detail
            continue
        has[i] = True
    return has

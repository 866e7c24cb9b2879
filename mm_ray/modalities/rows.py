"""``RowPreprocessor``: the batch contract of ``ModalitySpec.preprocessor`` for a decoder of one member at a time.

Subclass it, give it the modality's name and per-row column shapes/dtypes, and write ``decode_row``::

    class DepthPreprocessor(RowPreprocessor):
        def __init__(self, size: int):
            super().__init__("depth", shapes={"depth": (1, size, size)}, dtypes={"depth": "float32"})

        def decode_row(self, data: bytes) -> dict[str, np.ndarray]:
            ...                                   # raise SampleError("bad_depth", "why") on a bad member
            return {"depth": array}

    DepthPreprocessor(64)({"depth_bytes": np.array([png, None], dtype=object)})
    # -> {"depth": float32 [2, 1, 64, 64], "has_depth": [True, False], "__reject__": ..., "__reject_detail__": ...}

A ``SampleError`` marks its row rejected (quarantined by the pool, counted by reason); any other exception is a
bug in the decoder and stops the run. Rows without the member, and rejected rows, stay all zeros.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mm_ray.columns import REJECT, REJECT_DETAIL
from mm_ray.modalities.spec import presence_column, raw_column
from mm_ray.preprocess.batch import decode_rows, reject_columns


class RowPreprocessor:
    """Runs ``decode_row`` on every present, not yet rejected member of a batch (see the module docstring)."""

    def __init__(self, name: str, *, shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str]):
        self.name = name
        self.shapes = {c: tuple(s) for c, s in shapes.items()}
        self.dtypes = {c: np.dtype(dtypes[c]) for c in self.shapes}

    def decode_row(self, data: bytes) -> Mapping[str, np.ndarray]:
        """One member's bytes -> an array per column (cast to the column's dtype; shapes must match)."""
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raw = batch.pop(raw_column(self.name))
        n = len(raw)
        reject, detail = reject_columns(batch, n)
        out = {c: np.zeros((n, *shape), dtype=self.dtypes[c]) for c, shape in self.shapes.items()}

        def decode_one(i: int, data: bytes) -> None:
            values = self.decode_row(data)
            # Validated before any row is written, so a failing sample leaves its row all zeros.
            arrays = {c: np.asarray(values[c]) for c in self.shapes}
            for c, value in arrays.items():
                if value.shape != self.shapes[c]:
                    raise ValueError(f"{type(self).__name__}.decode_row: {c} has shape {value.shape}, "
                                     f"expected {self.shapes[c]}")  # fmt: skip
            for c, value in arrays.items():
                out[c][i] = value

        has = decode_rows(raw, reject, detail, decode_one)
        batch.update(out)
        batch[presence_column(self.name)] = has
        batch[REJECT] = reject
        batch[REJECT_DETAIL] = detail
        return batch

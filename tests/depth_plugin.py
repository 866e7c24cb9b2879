"""A modality from outside mm_ray, as a user would write one: depth maps stored as 16-bit PNG members.

    mm-ray preprocess SHARDS --out CACHE 'modalities.plugins=[depth_plugin:DEPTH]' data.modalities=[image,depth]

Nothing in ``mm_ray/`` knows this module: the spec below is all a modality is (README "Your own modality").
A ``<key>.depth.png`` member holds a 16-bit greyscale PNG (millimetres, say); it is resized to ``size`` x ``size``,
scaled to ``[0, max_depth]`` metres and handed to the model as float32 ``[1, size, size]``. Anything else (an
8-bit PNG, a colour image, bytes that are no PNG) quarantines its sample as ``bad_depth``.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from mm_ray.modalities import ColumnSpec, ModalitySpec, RowPreprocessor
from mm_ray.quarantine import SampleError

NAME = "depth"
BAD_DEPTH = "bad_depth"
FULL_SCALE = 65535


@dataclasses.dataclass(frozen=True)
class DepthSettings:
    """``modalities.settings.depth.*``: how depth maps are made model-ready."""

    size: int = 16
    """Output side in pixels."""
    max_depth: float = 10.0
    """Metres that the full 16-bit scale stands for."""


class DepthPreprocessor(RowPreprocessor):
    """16-bit PNG bytes -> float32 ``[1, size, size]`` in metres."""

    def __init__(self, size: int, max_depth: float):
        super().__init__(NAME, shapes={NAME: (1, size, size)}, dtypes={NAME: "float32"})
        self.size, self.max_depth = size, max_depth

    def decode_row(self, data: bytes) -> dict[str, np.ndarray]:
        try:
            im = Image.open(io.BytesIO(data), formats=["PNG"])
            im.load()
        except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError ...
            raise SampleError(BAD_DEPTH, f"not a PNG: {type(err).__name__}: {err}") from None
        if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise SampleError(BAD_DEPTH, f"a depth map is a 16-bit greyscale PNG, got mode {im.mode}")
        # Pillow resizes 16-bit maps in 32-bit integer mode; nearest keeps the depths measured, not blended.
        resized = im.convert("I").resize((self.size, self.size), Image.Resampling.NEAREST)
        metres = np.asarray(resized, dtype=np.float32) * (self.max_depth / FULL_SCALE)
        return {NAME: metres[None]}


def _encoder(ctx):
    import torch
    from torch import nn

    class DepthEncoder(nn.Module):
        """A two-layer CNN over the depth map, average-pooled."""

        def __init__(self, width: int, out_dim: int):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(1, width, 3, stride=2, padding=1), nn.GELU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
            )  # fmt: skip
            self.proj = nn.Linear(width, out_dim)

        def forward(self, depth: torch.Tensor) -> torch.Tensor:
            return self.proj(self.net(depth).mean(dim=(2, 3)))

    return DepthEncoder(ctx.width, ctx.out_dim)


DEPTH = ModalitySpec(
    name=NAME,
    extensions=("depth.png",),
    settings_type=DepthSettings,
    columns=(ColumnSpec(NAME, "float32"),),
    shapes=lambda s: {NAME: (1, s.size, s.size)},
    preprocessor=DepthPreprocessor,
    preprocessor_kwargs=lambda s, ctx: {"size": s.size, "max_depth": s.max_depth},
    encoder=_encoder,
    cost_share=0.2,
    reasons=(BAD_DEPTH,),
    description="16-bit PNG depth maps -> float32 metres [1, S, S]; a small CNN",
)


def depth_png(metres: np.ndarray, max_depth: float = 10.0) -> bytes:
    """A 16-bit PNG of the depth map ``metres`` (2-D), as a shard would hold it."""
    counts = np.clip(np.rint(metres / max_depth * FULL_SCALE), 0, FULL_SCALE).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(counts).save(out, format="PNG")
    return out.getvalue()

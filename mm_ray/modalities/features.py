"""The ``features`` modality: precomputed vectors or small arrays as ``.npy`` members -> an MLP encoder.

For embeddings computed elsewhere (a CLIP image embedding, a pose vector, sensor statistics). Settings: the
``features`` config section (``FeaturesConfig``: shape and dtype, both required to match). A member is read with
``numpy.load(..., allow_pickle=False)``: an object array, a pickle, an ``.npz``, a wrong shape or dtype, or a
NaN/inf quarantines its sample as ``bad_features`` with the reason in its detail. The member size cap
(``data.max_member_bytes``) applies before any byte is read, like every member. Opt-in:
``data.modalities=[image,text,audio,features] features.shape=[512]``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import FeaturesConfig
from mm_ray.modalities.rows import RowPreprocessor
from mm_ray.modalities.spec import ColumnSpec, EncoderContext, ModalitySpec, PreprocessContext
from mm_ray.quarantine import Reason, SampleError

NAME = "features"

_NPY_MAGIC = b"\x93NUMPY"


class FeaturesPreprocessor(RowPreprocessor):
    """``.npy`` bytes of exactly ``shape`` and ``dtype`` -> float32 (else ``SampleError(BAD_FEATURES)``)."""

    def __init__(self, shape: tuple[int, ...], dtype: str = "float32"):
        super().__init__(NAME, shapes={NAME: tuple(shape)}, dtypes={NAME: "float32"})
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    def decode_row(self, data: bytes) -> Mapping[str, np.ndarray]:
        if not data.startswith(_NPY_MAGIC):
            raise SampleError(Reason.BAD_FEATURES, "not a .npy array (no NUMPY magic)")
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as err:  # ValueError (pickled objects), EOFError/OSError (cut short), ...
            raise SampleError(Reason.BAD_FEATURES, f"{type(err).__name__}: {err}") from None
        if array.dtype != self.dtype:
            raise SampleError(Reason.BAD_FEATURES, f"dtype {array.dtype}, features.dtype is {self.dtype}")
        if array.shape != self.shape:
            raise SampleError(
                Reason.BAD_FEATURES, f"shape {list(array.shape)}, features.shape is {list(self.shape)}"
            )
        if not np.isfinite(array).all():
            raise SampleError(Reason.BAD_FEATURES, "non-finite values (NaN or inf)")
        return {NAME: array}


def _shape(settings: FeaturesConfig) -> tuple[int, ...]:
    if not settings.shape or any(d < 1 for d in settings.shape):
        raise ConfigError(
            f"features.shape: the shape of one sample's array is required with features among "
            f"data.modalities (e.g. features.shape=[512]), got {settings.shape}"
        )
    return tuple(settings.shape)


def _shapes(settings: FeaturesConfig) -> dict[str, tuple[int, ...]]:
    return {NAME: _shape(settings)}


def _preprocessor_kwargs(settings: FeaturesConfig, ctx: PreprocessContext) -> dict[str, Any]:
    return {"shape": _shape(settings), "dtype": settings.dtype}


def _encoder(ctx: EncoderContext) -> Any:
    # Imported here: the decoding actors import this module and never need torch.
    from mm_ray.encoders.builtin import FeaturesEncoder

    return FeaturesEncoder(
        in_dim=math.prod(ctx.shapes[NAME]), width=ctx.width, depth=ctx.depth, out_dim=ctx.out_dim
    )


FEATURES = ModalitySpec(
    name=NAME,
    extensions=("npy",),
    settings_type=FeaturesConfig,
    columns=(ColumnSpec(NAME, "float32"),),
    shapes=_shapes,
    preprocessor=FeaturesPreprocessor,
    preprocessor_kwargs=_preprocessor_kwargs,
    encoder=_encoder,
    # Parsing a .npy header and copying a few KB: ~0.02 ms a sample.
    cost_share=0.02,
    pool_cpus=0.25,
    reasons=(Reason.BAD_FEATURES.value,),
    description="precomputed .npy arrays of a fixed shape -> MLP encoder",
)

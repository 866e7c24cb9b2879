"""Render a style symbol as a precomputed feature vector: a float32 ``.npy`` array of ``dim`` values.

What an embedding computed elsewhere looks like to mm_ray: a fixed-length float vector whose meaning lies in a
few directions. The K style symbols get K orthonormal prototype directions of R^dim (fixed: the same in every
shard, like the renderers' palettes); a sample's vector is its style's prototype plus Gaussian noise of
standard deviation ``NOISE_STD`` in each of the other ``dim - K`` directions, so the noise is larger than the
signal in norm yet never moves the vector's projection on the prototypes. The style is therefore read back
exactly (``decode_style``), as a shape is from its image: the benchmark's uncertainty is the symbol's
corruption alone, which keeps the caps in :mod:`mm_ray.demo.bayes` exact.

Usage::

    data = render_features(rng, style=1, num_symbols=4, dim=16)   # b"\\x93NUMPY..." (np.save bytes)
    vector = np.load(io.BytesIO(data), allow_pickle=False)       # float32 [16]
    decode_style(vector, num_symbols=4) == 1
"""

from __future__ import annotations

import functools
import io

import numpy as np

NOISE_STD = 1.0
"""Standard deviation of the noise in each direction orthogonal to the prototypes."""
BASIS_SEED = 20_230_417
"""Seeds the fixed orthonormal basis (prototypes first): not the dataset seed, so every split shares it."""


def check_dim(dim: int, num_symbols: int) -> None:
    """``ValueError`` unless ``dim`` leaves room for the K prototypes and at least one noise direction."""
    if dim <= num_symbols:
        raise ValueError(f"demo.features_dim must exceed the number of symbols ({num_symbols}), got {dim}")


@functools.lru_cache(maxsize=8)
def basis(dim: int) -> np.ndarray:
    """A fixed orthonormal basis of R^dim as columns ([dim, dim] float64); the first K are the prototypes."""
    gaussian = np.random.default_rng(BASIS_SEED).standard_normal((dim, dim))
    q, r = np.linalg.qr(gaussian)
    return q * np.sign(np.diag(r))  # sign-fixed: QR's output is unique only up to column signs


def feature_vector(rng: np.random.Generator, *, style: int, num_symbols: int, dim: int) -> np.ndarray:
    """The float32 [dim] vector of one sample showing ``style``."""
    check_dim(dim, num_symbols)
    directions = basis(dim)
    noise = rng.normal(0.0, NOISE_STD, size=dim - num_symbols)
    return (directions[:, style] + directions[:, num_symbols:] @ noise).astype(np.float32)


def render_features(rng: np.random.Generator, *, style: int, num_symbols: int, dim: int) -> bytes:
    """``np.save`` bytes of :func:`feature_vector` (a plain float32 array: loads with ``allow_pickle=False``)."""
    out = io.BytesIO()
    np.save(out, feature_vector(rng, style=style, num_symbols=num_symbols, dim=dim), allow_pickle=False)
    return out.getvalue()


def decode_style(vectors: np.ndarray, *, num_symbols: int) -> np.ndarray:
    """The style each vector ([..., dim]) shows: the prototype it projects on most."""
    vectors = np.asarray(vectors, dtype=np.float64)
    prototypes = basis(vectors.shape[-1])[:, :num_symbols]
    return (vectors @ prototypes).argmax(axis=-1)

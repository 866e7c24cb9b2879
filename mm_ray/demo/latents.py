"""The latent model of the synthetic benchmark: symbols, the label rule, and corrupted observations.

Three latent symbols per sample, independent and uniform over ``{0, ..., K-1}``:

- ``topic``: shown twice, as the caption's topic word (TEXT) and as the image's background colour (IMAGE);
- ``shape``: the shape drawn in the IMAGE;
- ``pitch``: the tone's frequency in the AUDIO.

The topic also picks which kind of information the label needs (``K`` even, 4 to 8; ``h = K // 2``)::

    topic <  h              "scene":   label = topic + h * (shape mod 2)   redundant topic + unique image detail
    h <= topic < h + K // 4 "sound":   label = pitch                       unique to audio
    topic >= h + K // 4     "synergy": label = (shape + pitch) mod K       needs image AND audio together

The label is uniform over the K classes in every regime, so chance accuracy is exactly ``1 / K``. Each rendered
symbol (the four ``OBSERVATIONS``) is corrupted on its own: with probability ``corruption[name]`` the renderer
is given a uniformly random *other* value. The label always comes from the clean latents, so no model can beat
the Bayes accuracy computed in :mod:`mm_ray.demo.bayes`.

Usage::

    rng = np.random.default_rng(0)
    lat = draw_latents(rng, 1000, num_symbols=4, corruption=DEFAULT_CORRUPTION)
    lat.label, lat.observed["image_shape"]
"""

from __future__ import annotations

import dataclasses

import numpy as np

OBSERVATIONS = ("text_topic", "image_color", "image_shape", "audio_pitch")
"""The rendered symbols, in the axis order of the joint table in :mod:`mm_ray.demo.bayes`."""

LATENT_OF = {"text_topic": "topic", "image_color": "topic", "image_shape": "shape", "audio_pitch": "pitch"}
"""Which latent each rendered symbol shows."""

MODALITY_OBSERVATIONS = {
    "image": ("image_color", "image_shape"),
    "audio": ("audio_pitch",),
    "text": ("text_topic",),
}
"""What a model of each modality can see (in canonical modality order: image, audio, text)."""

DEFAULT_CORRUPTION = {"text_topic": 0.10, "image_color": 0.10, "image_shape": 0.10, "audio_pitch": 0.10}
DEFAULT_NUM_SYMBOLS = 4
MAX_SYMBOLS = 8  # the renderers have 8 colours, shapes, pitches and topic words


@dataclasses.dataclass(frozen=True)
class Latents:
    """Latents, labels and the (possibly corrupted) rendered symbols of N samples; all int64 arrays [N]."""

    topic: np.ndarray
    shape: np.ndarray
    pitch: np.ndarray
    label: np.ndarray
    observed: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.label)


def check_params(num_symbols: int, corruption: dict[str, float] | None) -> dict[str, float]:
    """Validate K and the corruption rates; returns the full rate dict (missing names take the defaults)."""
    if num_symbols % 2 or not 4 <= num_symbols <= MAX_SYMBOLS:
        raise ValueError(f"num_symbols must be even and in [4, {MAX_SYMBOLS}], got {num_symbols}")
    rates = dict(DEFAULT_CORRUPTION)
    for name, rate in (corruption or {}).items():
        if name not in rates:
            raise ValueError(f"unknown corruption channel {name!r}; expected one of {OBSERVATIONS}")
        # above (K-1)/K the observation anti-correlates with the symbol: still informative but confusing.
        if not 0.0 <= float(rate) <= (num_symbols - 1) / num_symbols:
            raise ValueError(f"corruption[{name!r}] must be in [0, (K-1)/K], got {rate}")
        rates[name] = float(rate)
    return rates


def regime_bounds(num_symbols: int) -> tuple[int, int]:
    """(first "sound" topic, first "synergy" topic)."""
    half = num_symbols // 2
    return half, half + num_symbols // 4


def label_rule(topic: np.ndarray, shape: np.ndarray, pitch: np.ndarray, num_symbols: int) -> np.ndarray:
    """The label of each sample from its clean latents (vectorised; works on broadcastable arrays)."""
    topic, shape, pitch = np.broadcast_arrays(*(np.asarray(a, dtype=np.int64) for a in (topic, shape, pitch)))
    sound, synergy = regime_bounds(num_symbols)
    scene_label = topic + (num_symbols // 2) * (shape % 2)
    synergy_label = (shape + pitch) % num_symbols
    return np.where(topic < sound, scene_label, np.where(topic < synergy, pitch, synergy_label))


def label_rule_text(num_symbols: int) -> str:
    """The label rule in words, for the manifest."""
    sound, synergy = regime_bounds(num_symbols)
    return (
        f"K={num_symbols}; topic, shape, pitch uniform over 0..K-1. "
        f"topic < {sound}: label = topic + {num_symbols // 2} * (shape mod 2); "
        f"{sound} <= topic < {synergy}: label = pitch; "
        f"topic >= {synergy}: label = (shape + pitch) mod {num_symbols}. "
        "Text shows topic (word), image shows topic (background colour) and shape, audio shows pitch; "
        "each shown symbol is independently replaced by a uniformly random other value with its corruption rate."
    )


def corrupt(rng: np.random.Generator, values: np.ndarray, rate: float, num_symbols: int) -> np.ndarray:
    """Replace each value, with probability ``rate``, by a uniformly random *different* symbol."""
    flip = rng.random(len(values)) < rate
    # adding 1..K-1 mod K hits every other symbol exactly once: uniform over the K-1 wrong values.
    shift = rng.integers(1, num_symbols, size=len(values))
    return np.where(flip, (values + shift) % num_symbols, values)


def observation_channel(rate: float, num_symbols: int) -> np.ndarray:
    """P(observed = column | true = row) of :func:`corrupt`, a [K, K] matrix."""
    off = rate / (num_symbols - 1)
    return np.full((num_symbols, num_symbols), off) + np.eye(num_symbols) * (1.0 - rate - off)


def draw_latents(
    rng: np.random.Generator, n: int, *, num_symbols: int, corruption: dict[str, float] | None = None
) -> Latents:
    """Draw N samples: clean latents, labels, and the corrupted symbol each renderer gets."""
    rates = check_params(num_symbols, corruption)
    topic, shape, pitch = (rng.integers(0, num_symbols, size=n) for _ in range(3))
    clean = {"topic": topic, "shape": shape, "pitch": pitch}
    observed = {name: corrupt(rng, clean[LATENT_OF[name]], rates[name], num_symbols) for name in OBSERVATIONS}
    return Latents(topic, shape, pitch, label_rule(topic, shape, pitch, num_symbols), observed)

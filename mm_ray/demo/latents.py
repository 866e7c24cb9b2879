"""The latent model of the synthetic benchmark: symbols, the label rule, and corrupted observations.

Three latent symbols per sample, independent and uniform over ``{0, ..., K-1}``:

- ``topic``: shown twice, as the caption's topic word (TEXT) and as the image's background colour (IMAGE);
- ``shape``: the shape drawn in the IMAGE;
- ``pitch``: the tone's frequency in the AUDIO.

The topic also picks which kind of information the label needs (``K`` even, 4 to 8; ``h = K // 2``)::

    topic <  h              "scene":   label = topic + h * (shape mod 2)   redundant topic + unique image detail
    h <= topic < h + K // 4 "sound":   label = pitch                       unique to audio
    topic >= h + K // 4     "synergy": label = (shape + pitch) mod K       needs image AND audio together

**The features variant** (``features=True``; ``demo.features_dim > 0``) adds a fourth latent, ``style``, shown
only by the FEATURES member (a ``.npy`` vector, :mod:`mm_ray.demo.render_features`), and gives it the shape's
job in half of the scene regime::

    topic <  h, topic even  "scene":   label = topic + h * (shape mod 2)   as before
    topic <  h, topic odd   "scene":   label = topic + h * (style mod 2)   redundant topic + unique features detail

The sound and synergy regimes are unchanged, so no subset without the features vector can tell the odd scene
labels ``topic`` and ``topic + h`` apart. The shape keeps a part of its own in the label (the even scene
topics): a shape that mattered only through ``(shape + pitch) mod K`` would give the image encoder no signal of
its own to start from, and a fusion takes many times longer to find it. The draws of the three-modality
latents come first and are the same with or without it (its style and the style's corruption are drawn after
them).

The label is uniform over the K classes in every regime, so chance accuracy is exactly ``1 / K``. Each rendered
symbol (the four ``OBSERVATIONS``, five with ``FEATURES_OBSERVATION``) is corrupted on its own: with probability ``corruption[name]`` the renderer
is given a uniformly random *other* value. The label always comes from the clean latents, so no model can beat
the Bayes accuracy computed in :mod:`mm_ray.demo.bayes`.

Usage::

    rng = np.random.default_rng(0)
    lat = draw_latents(rng, 1000, num_symbols=4, corruption=DEFAULT_CORRUPTION)
    lat.label, lat.observed["image_shape"]
    draw_latents(rng, 1000, num_symbols=4, features=True).observed["features_style"]
"""

from __future__ import annotations

import dataclasses

import numpy as np

OBSERVATIONS = ("text_topic", "image_color", "image_shape", "audio_pitch")
"""The rendered symbols, in the axis order of the joint table in :mod:`mm_ray.demo.bayes`."""

FEATURES_OBSERVATION = "features_style"
"""The symbol the features variant adds, the last axis of its joint table."""

LATENT_OF = {
    "text_topic": "topic",
    "image_color": "topic",
    "image_shape": "shape",
    "audio_pitch": "pitch",
    FEATURES_OBSERVATION: "style",
}
"""Which latent each rendered symbol shows."""

MODALITY_OBSERVATIONS = {
    "image": ("image_color", "image_shape"),
    "audio": ("audio_pitch",),
    "text": ("text_topic",),
    "features": (FEATURES_OBSERVATION,),
}
"""What a model of each modality can see."""

DEFAULT_CORRUPTION = {"text_topic": 0.10, "image_color": 0.10, "image_shape": 0.10, "audio_pitch": 0.10}
DEFAULT_FEATURES_CORRUPTION = 0.10
"""The style's corruption rate in the features variant unless ``corruption`` names one."""
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
    style: np.ndarray | None = None
    """The features variant's fourth latent (None without it)."""

    def __len__(self) -> int:
        return len(self.label)


def observations(features: bool = False) -> tuple[str, ...]:
    """The rendered symbols of the benchmark (with the features variant's last), in joint-table axis order."""
    return (*OBSERVATIONS, FEATURES_OBSERVATION) if features else OBSERVATIONS


def check_params(
    num_symbols: int, corruption: dict[str, float] | None, *, features: bool = False
) -> dict[str, float]:
    """Validate K and the corruption rates; returns the full rate dict (missing names take the defaults)."""
    if num_symbols % 2 or not 4 <= num_symbols <= MAX_SYMBOLS:
        raise ValueError(f"num_symbols must be even and in [4, {MAX_SYMBOLS}], got {num_symbols}")
    rates = dict(DEFAULT_CORRUPTION)
    if features:
        rates[FEATURES_OBSERVATION] = DEFAULT_FEATURES_CORRUPTION
    for name, rate in (corruption or {}).items():
        if name not in rates:
            raise ValueError(f"unknown corruption channel {name!r}; expected one of {observations(features)}")
        # above (K-1)/K the observation anti-correlates with the symbol: still informative but confusing.
        if not 0.0 <= float(rate) <= (num_symbols - 1) / num_symbols:
            raise ValueError(f"corruption[{name!r}] must be in [0, (K-1)/K], got {rate}")
        rates[name] = float(rate)
    return rates


def regime_bounds(num_symbols: int) -> tuple[int, int]:
    """(first "sound" topic, first "synergy" topic)."""
    half = num_symbols // 2
    return half, half + num_symbols // 4


def label_rule(
    topic: np.ndarray,
    shape: np.ndarray,
    pitch: np.ndarray,
    num_symbols: int,
    style: np.ndarray | None = None,
) -> np.ndarray:
    """The label of each sample from its clean latents (vectorised; works on broadcastable arrays). With
    ``style`` (the features variant) the odd scene topics take the style's parity instead of the shape's."""
    latents = (topic, shape, pitch) if style is None else (topic, shape, pitch, style)
    topic, shape, pitch, *rest = np.broadcast_arrays(*(np.asarray(a, dtype=np.int64) for a in latents))
    sound, synergy = regime_bounds(num_symbols)
    detail = shape if style is None else np.where(topic % 2 == 0, shape, rest[0])
    scene_label = topic + (num_symbols // 2) * (detail % 2)
    synergy_label = (shape + pitch) % num_symbols
    return np.where(topic < sound, scene_label, np.where(topic < synergy, pitch, synergy_label))


def label_rule_text(num_symbols: int, *, features: bool = False) -> str:
    """The label rule in words, for the manifest."""
    sound, synergy = regime_bounds(num_symbols)
    if not features:
        return (
            f"K={num_symbols}; topic, shape, pitch uniform over 0..K-1. "
            f"topic < {sound}: label = topic + {num_symbols // 2} * (shape mod 2); "
            f"{sound} <= topic < {synergy}: label = pitch; "
            f"topic >= {synergy}: label = (shape + pitch) mod {num_symbols}. "
            "Text shows topic (word), image shows topic (background colour) and shape, audio shows pitch; "
            "each shown symbol is independently replaced by a uniformly random other value with its corruption "
            "rate."
        )
    return (
        f"K={num_symbols}; topic, shape, pitch, style uniform over 0..K-1. "
        f"topic < {sound} and even: label = topic + {num_symbols // 2} * (shape mod 2); "
        f"topic < {sound} and odd: label = topic + {num_symbols // 2} * (style mod 2); "
        f"{sound} <= topic < {synergy}: label = pitch; "
        f"topic >= {synergy}: label = (shape + pitch) mod {num_symbols}. "
        "Text shows topic (word), image shows topic (background colour) and shape, audio shows pitch, the "
        "features vector (.npy) shows style; each shown symbol is independently replaced by a uniformly random "
        "other value with its corruption rate."
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
    rng: np.random.Generator,
    n: int,
    *,
    num_symbols: int,
    corruption: dict[str, float] | None = None,
    features: bool = False,
) -> Latents:
    """Draw N samples: clean latents, labels, and the corrupted symbol each renderer gets (with ``features``,
    the style too, drawn after everything else so the other draws do not move)."""
    rates = check_params(num_symbols, corruption, features=features)
    topic, shape, pitch = (rng.integers(0, num_symbols, size=n) for _ in range(3))
    clean = {"topic": topic, "shape": shape, "pitch": pitch}
    observed = {name: corrupt(rng, clean[LATENT_OF[name]], rates[name], num_symbols) for name in OBSERVATIONS}
    if not features:
        return Latents(topic, shape, pitch, label_rule(topic, shape, pitch, num_symbols), observed)
    style = rng.integers(0, num_symbols, size=n)
    observed[FEATURES_OBSERVATION] = corrupt(rng, style, rates[FEATURES_OBSERVATION], num_symbols)
    return Latents(topic, shape, pitch, label_rule(topic, shape, pitch, num_symbols, style), observed, style)

"""Exact accuracy caps of the synthetic benchmark, by enumerating the latent model.

``joint_table`` builds P(label, text_topic, image_color, image_shape, audio_pitch), a [K]*5 array (with
``features=True``: P(label, ..., features_style), a [K]*6 array). The Bayes accuracy of a model that sees a
subset of modalities is the sum, over the observations it sees, of the largest joint probability over labels:
``subset_caps`` does that for every subset. ``additive_reference`` fits the best *additive* model (label score =
a sum of one score per modality, a log-linear product of experts) to the exact table by minimising
cross-entropy with numpy Adam; its accuracy is a *fitted* number (what an additive / logit-averaging fusion
trained with cross-entropy converges to with unlimited data and capacity), not an enumerated one.

Usage::

    ref = reference_numbers(num_symbols=4, corruption=DEFAULT_CORRUPTION)
    ref["caps"]["image+text+audio"]   # the Bayes accuracy
    ref["additive_fusion"]            # the fitted additive-fusion reference
    reference_numbers(num_symbols=4, features=True)["caps"]["image+text+audio+features"]   # 15 subsets
"""

from __future__ import annotations

import itertools

import numpy as np

from mm_ray.demo.latents import (
    FEATURES_OBSERVATION,
    MODALITY_OBSERVATIONS,
    OBSERVATIONS,
    check_params,
    label_rule,
    observation_channel,
    observations,
)
from mm_ray.modalities.registry import DEFAULT_MODALITIES

MODALITY_ORDER = DEFAULT_MODALITIES
"""Canonical order of the three-modality benchmark's names inside a subset key (the registry's, shared with the
metrics)."""

FEATURES_MODALITY_ORDER = (*DEFAULT_MODALITIES, "features")
"""The features variant's modalities, in the registry's canonical order (features after the default three)."""


def benchmark_modalities(features: bool = False) -> tuple[str, ...]:
    """The modalities of the benchmark (with the features variant's), in canonical order."""
    return FEATURES_MODALITY_ORDER if features else MODALITY_ORDER


def subset_key(modalities) -> str:
    """The manifest key of a modality subset, in canonical order: ``{"text", "image"} -> "image+text"``."""
    names = set(modalities)
    unknown = names - set(FEATURES_MODALITY_ORDER)
    if unknown or not names:
        raise ValueError(f"need a non-empty subset of {FEATURES_MODALITY_ORDER}, got {sorted(modalities)}")
    return "+".join(m for m in FEATURES_MODALITY_ORDER if m in names)


def all_subsets(modalities: tuple[str, ...] = MODALITY_ORDER) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities`` (default: the three-modality benchmark's), singles first."""
    return [c for r in range(1, len(modalities) + 1) for c in itertools.combinations(modalities, r)]


def joint_table(
    *, num_symbols: int, corruption: dict[str, float] | None = None, features: bool = False
) -> np.ndarray:
    """P(label, *observations(features)) as a [K]*5 array ([K]*6 with ``features``; label axis first); sums
    to 1."""
    k = num_symbols
    rates = check_params(k, corruption, features=features)
    chan = {name: observation_channel(rates[name], k) for name in observations(features)}
    if not features:
        topic, shape, pitch = np.meshgrid(np.arange(k), np.arange(k), np.arange(k), indexing="ij")
        label_onehot = np.eye(k)[label_rule(topic, shape, pitch, k)]  # [topic, shape, pitch, label]
        joint = np.einsum(
            "rpqy,rt,rc,ps,qa->ytcsa",
            label_onehot,
            chan["text_topic"],
            chan["image_color"],
            chan["image_shape"],
            chan["audio_pitch"],
        )
        return joint / k**3
    topic, shape, pitch, style = np.meshgrid(*[np.arange(k)] * 4, indexing="ij")
    label_onehot = np.eye(k)[label_rule(topic, shape, pitch, k, style)]  # [topic, shape, pitch, style, label]
    joint = np.einsum(
        "rpqvy,rt,rc,ps,qa,vf->ytcsaf",
        label_onehot,
        chan["text_topic"],
        chan["image_color"],
        chan["image_shape"],
        chan["audio_pitch"],
        chan[FEATURES_OBSERVATION],
    )
    return joint / k**4


def _table_observations(joint: np.ndarray) -> tuple[str, ...]:
    """The observation of each axis after the label's: the features variant's table has one more."""
    return observations(features=joint.ndim == len(OBSERVATIONS) + 2)


def table_modalities(joint: np.ndarray) -> tuple[str, ...]:
    """The modalities a joint table's observations belong to, in canonical order."""
    return benchmark_modalities(features=joint.ndim == len(OBSERVATIONS) + 2)


def _axes_of(joint: np.ndarray, modalities) -> tuple[int, ...]:
    """Table axes (1-based: axis 0 is the label) of the observations a modality subset sees."""
    seen = {obs for m in modalities for obs in MODALITY_OBSERVATIONS[m]}
    return tuple(1 + i for i, name in enumerate(_table_observations(joint)) if name in seen)


def cap(joint: np.ndarray, modalities) -> float:
    """Bayes accuracy of the best classifier that sees only ``modalities``."""
    hidden = tuple(ax for ax in range(1, joint.ndim) if ax not in _axes_of(joint, modalities))
    marginal = joint.sum(axis=hidden)  # P(label, seen observations)
    return float(marginal.max(axis=0).sum())


def subset_caps(joint: np.ndarray) -> dict[str, float]:
    """Bayes accuracy for every non-empty modality subset, keyed by :func:`subset_key`."""
    return {subset_key(s): cap(joint, s) for s in all_subsets(table_modalities(joint))}


ADDITIVE_TERM_ORDER = ("text", "image", "audio", "features")
"""The order the per-modality scores are summed in (fixed, so the fitted number is reproducible)."""


def _score_shape(joint: np.ndarray, modality: str) -> tuple[int, ...]:
    """The broadcastable shape of one modality's score table: the label axis and the axes it sees."""
    axes = _axes_of(joint, [modality])
    return tuple(n if ax == 0 or ax in axes else 1 for ax, n in enumerate(joint.shape))


def _additive_logits(params: dict[str, np.ndarray]) -> np.ndarray:
    # every score table broadcasts over the observations its modality does not see
    return sum(params[name] for name in ADDITIVE_TERM_ORDER if name in params)


def additive_reference(joint: np.ndarray, *, steps: int = 2000, lr: float = 0.05) -> float:
    """Accuracy of the cross-entropy-optimal additive model: label logit = a sum of one score per modality,
    each a function of that modality's observations only (``f_y(image) + g_y(text) + h_y(audio) [+ j_y(features)]``).

    Fitted by full-batch Adam on the exact table (the objective is convex, so this converges to the
    optimum's accuracy; a few thousand steps on a [K]*5 table take well under a second for K=4).
    """
    params = {m: np.zeros(_score_shape(joint, m)) for m in table_modalities(joint)}
    sum_axes = {m: tuple(ax for ax, n in enumerate(p.shape) if n == 1) for m, p in params.items()}
    moments = {name: (np.zeros_like(p), np.zeros_like(p)) for name, p in params.items()}
    p_obs = joint.sum(axis=0, keepdims=True)
    # rescale so the gradient per observation cell is O(1) instead of O(1 / #cells)
    scale = 1.0 / p_obs.max()
    for step in range(1, steps + 1):
        logits = _additive_logits(params)
        prob = np.exp(logits - logits.max(axis=0, keepdims=True))
        prob /= prob.sum(axis=0, keepdims=True)
        grad_logits = (prob * p_obs - joint) * scale
        for name, axes in sum_axes.items():
            grad = grad_logits.sum(axis=axes, keepdims=True)
            m, v = moments[name]
            m[:] = 0.9 * m + 0.1 * grad
            v[:] = 0.999 * v + 0.001 * grad**2
            params[name] -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-12)
    logits = _additive_logits(params)
    # labels whose scores tie (symmetric setups do tie) are picked uniformly: no tie-breaking luck
    tied = logits >= logits.max(axis=0, keepdims=True) - 1e-9
    return float((joint * tied / tied.sum(axis=0, keepdims=True)).sum())


def reference_numbers(
    *, num_symbols: int, corruption: dict[str, float] | None = None, features: bool = False
) -> dict:
    """Everything the manifest reports about the optimum: chance, caps per subset, Bayes, additive fusion."""
    joint = joint_table(num_symbols=num_symbols, corruption=corruption, features=features)
    modalities = table_modalities(joint)
    # 12 digits: exact up to float summation noise, and readable in the manifest
    caps = {key: round(value, 12) for key, value in subset_caps(joint).items()}
    terms = " + ".join(f"{f}({m})" for f, m in zip("fghj", ("image", "audio", "text", "features"), strict=False)
                       if m in modalities)  # fmt: skip
    return {
        "chance_accuracy": round(float(joint.sum(axis=tuple(range(1, joint.ndim))).max()), 12),
        "bayes_accuracy": caps[subset_key(modalities)],
        "caps": caps,
        "additive_fusion": round(additive_reference(joint), 12),
        "additive_fusion_method": (
            f"fitted, not enumerated: accuracy of the cross-entropy-optimal model whose label logit is "
            f"{terms}, fitted with numpy Adam on the exact joint table"
        ),
    }

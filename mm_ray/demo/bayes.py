"""Exact accuracy caps of the synthetic benchmark, by enumerating the latent model.

``joint_table`` builds P(label, text_topic, image_color, image_shape, audio_pitch), a [K]*5 array. The
Bayes accuracy of a model that sees a subset of modalities is the sum, over the observations it sees, of the
largest joint probability over labels: ``subset_caps`` does that for every subset. ``additive_reference``
fits the best *additive* model (label score = f(image) + g(audio) + h(text), a log-linear product of
experts) to the exact table by minimising cross-entropy with numpy Adam; its accuracy is a *fitted* number
(what an additive / logit-averaging fusion trained with cross-entropy converges to with unlimited data and
capacity), not an enumerated one.

Usage::

    ref = reference_numbers(num_symbols=4, corruption=DEFAULT_CORRUPTION)
    ref["caps"]["image+text+audio"]   # the Bayes accuracy
    ref["additive_fusion"]            # the fitted additive-fusion reference
"""

from __future__ import annotations

import itertools

import numpy as np

from mm_ray.demo.latents import (
    MODALITY_OBSERVATIONS,
    OBSERVATIONS,
    check_params,
    label_rule,
    observation_channel,
)
from mm_ray.modalities.registry import DEFAULT_MODALITIES

MODALITY_ORDER = DEFAULT_MODALITIES
"""Canonical order of modality names inside a subset key (the registry's, shared with the metrics)."""


def subset_key(modalities) -> str:
    """The manifest key of a modality subset, in canonical order: ``{"text", "image"} -> "image+text"``."""
    names = set(modalities)
    unknown = names - set(MODALITY_ORDER)
    if unknown or not names:
        raise ValueError(f"need a non-empty subset of {MODALITY_ORDER}, got {sorted(modalities)}")
    return "+".join(m for m in MODALITY_ORDER if m in names)


def all_subsets() -> list[tuple[str, ...]]:
    """Every non-empty modality subset, singles first."""
    return [c for r in (1, 2, 3) for c in itertools.combinations(MODALITY_ORDER, r)]


def joint_table(*, num_symbols: int, corruption: dict[str, float] | None = None) -> np.ndarray:
    """P(label, *OBSERVATIONS) as an array of shape [K, K, K, K, K] (label axis first); sums to 1."""
    k = num_symbols
    rates = check_params(k, corruption)
    topic, shape, pitch = np.meshgrid(np.arange(k), np.arange(k), np.arange(k), indexing="ij")
    label_onehot = np.eye(k)[label_rule(topic, shape, pitch, k)]  # [topic, shape, pitch, label]
    chan = {name: observation_channel(rates[name], k) for name in OBSERVATIONS}
    joint = np.einsum(
        "rpqy,rt,rc,ps,qa->ytcsa",
        label_onehot,
        chan["text_topic"],
        chan["image_color"],
        chan["image_shape"],
        chan["audio_pitch"],
    )
    return joint / k**3


def _axes_of(modalities) -> tuple[int, ...]:
    """Table axes (1-based: axis 0 is the label) of the observations a modality subset sees."""
    seen = {obs for m in modalities for obs in MODALITY_OBSERVATIONS[m]}
    return tuple(1 + i for i, name in enumerate(OBSERVATIONS) if name in seen)


def cap(joint: np.ndarray, modalities) -> float:
    """Bayes accuracy of the best classifier that sees only ``modalities``."""
    hidden = tuple(ax for ax in range(1, joint.ndim) if ax not in _axes_of(modalities))
    marginal = joint.sum(axis=hidden)  # P(label, seen observations)
    return float(marginal.max(axis=0).sum())


def subset_caps(joint: np.ndarray) -> dict[str, float]:
    """Bayes accuracy for every non-empty modality subset, keyed by :func:`subset_key`."""
    return {subset_key(s): cap(joint, s) for s in all_subsets()}


def _additive_logits(params: dict[str, np.ndarray]) -> np.ndarray:
    # label axis 0, then text_topic, image_color, image_shape, audio_pitch (broadcast over the rest)
    text = params["text"][:, :, None, None, None]
    image = params["image"][:, None, :, :, None]
    audio = params["audio"][:, None, None, None, :]
    return text + image + audio


def additive_reference(joint: np.ndarray, *, steps: int = 2000, lr: float = 0.05) -> float:
    """Accuracy of the cross-entropy-optimal additive model ``f_y(image) + g_y(audio) + h_y(text)``.

    Fitted by full-batch Adam on the exact table (the objective is convex, so this converges to the
    optimum's accuracy; a few thousand steps on a [K]*5 table take well under a second for K=4).
    """
    k = joint.shape[0]
    params = {"image": np.zeros((k, k, k)), "audio": np.zeros((k, k)), "text": np.zeros((k, k))}
    sum_axes = {"image": (1, 4), "audio": (1, 2, 3), "text": (2, 3, 4)}
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
            grad = grad_logits.sum(axis=axes)
            m, v = moments[name]
            m[:] = 0.9 * m + 0.1 * grad
            v[:] = 0.999 * v + 0.001 * grad**2
            params[name] -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-12)
    logits = _additive_logits(params)
    # labels whose scores tie (symmetric setups do tie) are picked uniformly: no tie-breaking luck
    tied = logits >= logits.max(axis=0, keepdims=True) - 1e-9
    return float((joint * tied / tied.sum(axis=0, keepdims=True)).sum())


def reference_numbers(*, num_symbols: int, corruption: dict[str, float] | None = None) -> dict:
    """Everything the manifest reports about the optimum: chance, caps per subset, Bayes, additive fusion."""
    joint = joint_table(num_symbols=num_symbols, corruption=corruption)
    # 12 digits: exact up to float summation noise, and readable in the manifest
    caps = {key: round(value, 12) for key, value in subset_caps(joint).items()}
    return {
        "chance_accuracy": round(float(joint.sum(axis=(1, 2, 3, 4)).max()), 12),
        "bayes_accuracy": caps[subset_key(MODALITY_ORDER)],
        "caps": caps,
        "additive_fusion": round(additive_reference(joint), 12),
        "additive_fusion_method": (
            "fitted, not enumerated: accuracy of the cross-entropy-optimal model whose label logit is "
            "f(image) + g(audio) + h(text), fitted with numpy Adam on the exact joint table"
        ),
    }

"""The task variants of the synthetic benchmark: multi-label tags and regression targets with exact references.

    manifest = write_task_dataset("regression", "data/scores", num_samples=5000)
    manifest["reference"]["best_r2"]        # the best R^2 any model can reach (population), per subset
    manifest["oracle"]["val"]               # the Bayes predictor's own metrics on the val shards

Every sample holds ``<key>.npy`` (a float32 feature vector of ``FEATURES_DIM``; its first 8 entries carry signal) and ``<key>.txt`` (a short sentence); the label
comes as a ``.cls`` member or a ``.json`` field (both read the same way by ``mm_ray.tasks``). What is known
exactly, because the data is drawn from a model written down here:

- **regression** (targets ``score`` and ``level`` in the JSON): ``score = a . x[:4] + b[colour] + e1`` with
  ``x ~ N(0, I)`` the feature vector, ``colour`` one of four words in the text, ``e1 ~ N(0, s1^2)``;
  ``level = c . x[4:8] + e2``. The best R^2 of a target is ``Var(signal) / (Var(signal) + s^2)``: with both
  modalities, or with one (the other's part of the signal then counts as noise). Targets are standardised by
  the trainer, so their scales (score around 50) do not matter.
- **multilabel** (six independent tags with priors ``PRIORS``): tags 0-3 shift one feature each by ``+-SHIFT``
  (unit Gaussian noise); tags 4-5 put a word in the text that is right with probability ``TEXT_RELIABILITY``.
  The Bayes decision per tag (threshold 0.5 on the posterior) has an exact accuracy (``bayes_tag_accuracy``);
  with a modality missing, its tags fall back on the prior. F1 and mAP of the Bayes posterior have no closed
  form: the oracle's metrics on the val shards themselves (``oracle``) are the reference for those.

Each shard is a pure function of (kind, seed, split, index, size). The module is pure Python + numpy.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import webdataset as wds

FEATURES_DIM = 64
"""8 informative entries, then pure noise: the features encoder LayerNorms its input per sample, which on 8
entries alone would throw away their mean and scale (measured: R^2 0.53 where 0.65 is the best); over 64
mostly-noise entries that costs about half a point."""
TAR_MTIME = 946684800

# regression
SCORE_WEIGHTS = np.array([1.2, -0.8, 0.6, 0.4])
COLOUR_SHIFTS = {"red": -1.5, "orange": -0.5, "green": 0.5, "blue": 1.5}
SCORE_NOISE = 0.6
LEVEL_WEIGHTS = np.array([0.7, 0.7, -0.5, 0.3])
LEVEL_NOISE = 0.8
SCORE_OFFSET, SCORE_SCALE = 50.0, 10.0  # raw scale of the score target: standardisation must undo it

# multilabel
TAGS = ("animal", "bright", "indoor", "person", "rain", "road")
PRIORS = (0.5, 0.3, 0.2, 0.4, 0.5, 0.25)
FEATURE_TAGS = 4
SHIFT = 1.0
TEXT_RELIABILITY = 0.85
TEXT_WORDS = {"rain": ("wet", "dry"), "road": ("busy", "quiet")}


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def regression_reference() -> dict[str, dict[str, float]]:
    """Best R^2 per target and modality subset (``features``, ``text``, ``text+features``)."""
    var_x = float((SCORE_WEIGHTS**2).sum()) * SCORE_SCALE**2
    shifts = np.array(list(COLOUR_SHIFTS.values()))
    var_b = float(shifts.var()) * SCORE_SCALE**2
    noise = SCORE_NOISE**2 * SCORE_SCALE**2
    total = var_x + var_b + noise
    level_signal = float((LEVEL_WEIGHTS**2).sum())
    level_total = level_signal + LEVEL_NOISE**2
    return {
        "score": {"text+features": (var_x + var_b) / total, "features": var_x / total, "text": var_b / total},
        "level": {
            "text+features": level_signal / level_total,
            "features": level_signal / level_total,
            "text": 0.0,
        },
    }


def bayes_tag_accuracy() -> dict[str, dict[str, float]]:
    """The Bayes per-tag accuracy of every tag under each modality subset, and their mean (``"mean"``)."""
    out: dict[str, dict[str, float]] = {}
    for subset in ("text+features", "features", "text"):
        per_tag = {}
        for t, (tag, prior) in enumerate(zip(TAGS, PRIORS, strict=True)):
            seen = "features" in subset if t < FEATURE_TAGS else "text" in subset
            if not seen:
                per_tag[tag] = max(prior, 1 - prior)
            elif t < FEATURE_TAGS:
                c = math.log((1 - prior) / prior) / (2 * SHIFT)
                per_tag[tag] = prior * (1 - _normal_cdf(c - SHIFT)) + (1 - prior) * _normal_cdf(c + SHIFT)
            else:
                q = TEXT_RELIABILITY
                per_tag[tag] = max(prior * q, (1 - prior) * (1 - q)) + max(prior * (1 - q), (1 - prior) * q)
        per_tag["mean"] = float(np.mean([per_tag[t] for t in TAGS]))
        out[subset] = per_tag
    return out


def _draw(kind: str, rng: np.random.Generator, n: int) -> dict[str, Any]:
    """Latents, observations and labels of ``n`` samples."""
    if kind == "regression":
        x = rng.standard_normal((n, FEATURES_DIM))
        colours = rng.integers(0, len(COLOUR_SHIFTS), n)
        shift = np.array(list(COLOUR_SHIFTS.values()))[colours]
        score_mean = SCORE_OFFSET + SCORE_SCALE * (x[:, :4] @ SCORE_WEIGHTS + shift)
        level_mean = x[:, 4:8] @ LEVEL_WEIGHTS
        score = score_mean + SCORE_SCALE * SCORE_NOISE * rng.standard_normal(n)
        level = level_mean + LEVEL_NOISE * rng.standard_normal(n)
        words = list(COLOUR_SHIFTS)
        texts = [f"a {words[c]} sample" for c in colours]
        return {
            "x": x,
            "texts": texts,
            "targets": np.stack([score, level], 1),
            "best": np.stack([score_mean, level_mean], 1),
        }
    z = rng.random((n, len(TAGS))) < np.array(PRIORS)
    x = rng.standard_normal((n, FEATURES_DIM))
    x[:, :FEATURE_TAGS] += np.where(z[:, :FEATURE_TAGS], SHIFT, -SHIFT)
    right = rng.random((n, len(TAGS) - FEATURE_TAGS)) < TEXT_RELIABILITY
    said = np.where(right, z[:, FEATURE_TAGS:], ~z[:, FEATURE_TAGS:])
    texts = [
        "the scene is "
        + " and ".join(
            TEXT_WORDS[TAGS[FEATURE_TAGS + j]][0 if said[i, j] else 1] for j in range(said.shape[1])
        )
        for i in range(n)
    ]
    return {"x": x, "texts": texts, "tags": z, "posterior": _posterior(x, said)}


def _posterior(x: np.ndarray, said: np.ndarray) -> np.ndarray:
    """The Bayes posterior P(tag | features, text) of every tag (independent tags, independent noise)."""
    prior = np.array(PRIORS)
    post = np.empty((len(x), len(TAGS)))
    logit_prior = np.log(prior / (1 - prior))
    post[:, :FEATURE_TAGS] = 1 / (1 + np.exp(-(logit_prior[:FEATURE_TAGS] + 2 * SHIFT * x[:, :FEATURE_TAGS])))
    q = TEXT_RELIABILITY
    evidence = np.where(said, math.log(q / (1 - q)), math.log((1 - q) / q))
    post[:, FEATURE_TAGS:] = 1 / (1 + np.exp(-(logit_prior[FEATURE_TAGS:] + evidence)))
    return post


def write_task_shard(
    kind: str, path: str, *, split: str, index: int, num_samples: int, seed: int
) -> dict[str, Any]:
    """Write one shard; returns its samples' oracle predictions and labels (for the references)."""
    entropy = [seed, {"multilabel": 1, "regression": 2}[kind], ("train", "val").index(split), index]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    drawn = _draw(kind, rng, num_samples)
    with open(path, "wb") as f, wds.TarWriter(f, mtime=TAR_MTIME) as sink:
        for i in range(num_samples):
            key = f"{split}{index:06d}_{i:06d}"
            buf = io.BytesIO()
            np.save(buf, drawn["x"][i].astype(np.float32), allow_pickle=False)
            sample = {"__key__": key, "npy": buf.getvalue(), "txt": drawn["texts"][i].encode()}
            sample.update(_label_members(kind, drawn, i))
            sink.write(sample)
    return drawn


def _label_members(kind: str, drawn: dict[str, Any], i: int) -> dict[str, bytes]:
    if kind == "regression":
        score, level = drawn["targets"][i]
        # Every other sample gives the level as a string: a JSON number or a string holding one both read.
        fields = {"score": float(score), "level": float(level) if i % 2 else f"{level:.6f}"}
        return {"json": json.dumps(fields).encode()}
    names = [TAGS[t] for t in np.flatnonzero(drawn["tags"][i])]
    if i % 2:  # half the samples list their tags in a .cls member, half as a JSON list
        return {"cls": ",".join(names).encode()}
    return {"json": json.dumps({"label": names}).encode()}


def write_task_dataset(
    kind: str,
    out: str,
    *,
    num_samples: int = 5000,
    samples_per_shard: int = 500,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``out/{train,val}-NNNNNN.tar`` and ``out/dataset.json`` (references, oracle metrics); returns the
    manifest."""
    if kind not in ("multilabel", "regression"):
        raise ValueError(f"task variant: kind must be multilabel or regression, got {kind!r}")
    os.makedirs(out, exist_ok=True)
    n_val = round(num_samples * val_fraction)
    shards: dict[str, list[str]] = {"train": [], "val": []}
    drawn_val = []
    for split, total in (("train", num_samples - n_val), ("val", n_val)):
        for index, start in enumerate(range(0, total, samples_per_shard)):
            name = f"{split}-{index:06d}.tar"
            size = min(samples_per_shard, total - start)
            drawn = write_task_shard(
                kind, os.path.join(out, name), split=split, index=index, num_samples=size, seed=seed
            )
            shards[split].append(name)
            if split == "val":
                drawn_val.append(drawn)
    manifest = {
        "kind": kind,
        "seed": seed,
        "counts": {"train": num_samples - n_val, "val": n_val},
        "shards": shards,
        "features_dim": FEATURES_DIM,
        "reference": _reference(kind),
        "oracle": {"val": _oracle(kind, drawn_val)},
    }
    with open(os.path.join(out, "dataset.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    return manifest


def _reference(kind: str) -> dict[str, Any]:
    if kind == "regression":
        best = regression_reference()
        return {
            "targets": ["score", "level"],
            "best_r2": best,
            "best_mean_r2": {s: float(np.mean([best[t][s] for t in best])) for s in best["score"]},
        }
    return {"tags": list(TAGS), "priors": list(PRIORS), "bayes_tag_accuracy": bayes_tag_accuracy()}


def _oracle(kind: str, drawn: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The Bayes predictor's metrics on the val samples, computed with the task's own metric definitions."""
    import torch

    from mm_ray.config.schema import TaskConfig
    from mm_ray.tasks import TargetStats, task_of

    if kind == "regression":
        targets = np.concatenate([d["targets"] for d in drawn])
        best = np.concatenate([d["best"] for d in drawn])
        stats = TargetStats(
            (0.0, 0.0), (1.0, 1.0)
        )  # identity: the oracle's values are already on the raw scale
        meter = task_of(TaskConfig(kind="regression"), stats).meter(2)
        meter.update(torch.tensor(best), torch.tensor(targets))
    else:
        posterior = np.clip(np.concatenate([d["posterior"] for d in drawn]), 1e-7, 1 - 1e-7)
        tags = np.concatenate([d["tags"] for d in drawn]).astype(np.float32)
        meter = task_of(TaskConfig(kind="multilabel")).meter(len(TAGS))
        meter.update(torch.tensor(np.log(posterior / (1 - posterior))), torch.tensor(tags))
    return {k: v for k, v in meter.result().items() if k != "loss"}

"""A tiny fusion model and random model-ready rows, for the large-run tests (accumulation, precision, FSDP,
distributed validation): the real ``FusionModel`` (``late_concat``: an encoder per modality in an ``encoders``
ModuleDict), small enough that a step takes milliseconds on one CPU thread."""

from __future__ import annotations

from typing import Any

import numpy as np

from mm_ray.models import build_model

KWARGS = {
    "modalities": ["image", "text", "audio"],
    "num_classes": 3,
    "image_size": 16,
    "vocab_size": 30,
    "n_mels": 8,
    "max_text_len": 8,
    "width": 8,
    "depth": 1,
    "fusion_dim": 8,
}
AUDIO_FRAMES = 12


def tiny_model(preset: str = "late_concat", seed: int = 0):
    """The same initial weights for the same seed, in every process."""
    return build_model(preset, **KWARGS, seed=seed)


def rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` random model-ready rows (every modality present, a few audio missing), labels 0..2."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8),
        "input_ids": rng.integers(1, 30, (n, 8), dtype=np.int32),
        "attention_mask": np.ones((n, 8), dtype=np.int8),
        "audio": rng.standard_normal((n, 8, AUDIO_FRAMES)).astype(np.float32),
        "label": rng.integers(0, 3, n).astype(np.int64),
        "has_image": np.ones(n, dtype=bool),
        "has_text": np.ones(n, dtype=bool),
        "has_audio": rng.random(n) > 0.2,
    }


def batches(
    columns: dict[str, np.ndarray], size: int, start: int = 0, stop: int | None = None
) -> list[dict[str, Any]]:
    """Consecutive batches of ``size`` rows of ``columns[start:stop]`` (the last one may be short)."""
    stop = len(columns["label"]) if stop is None else stop
    return [{k: v[i : min(i + size, stop)] for k, v in columns.items()} for i in range(start, stop, size)]

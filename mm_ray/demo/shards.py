"""Write one shard of the synthetic benchmark as a webdataset tar file.

Each shard is a pure function of (seed, split, shard index, size, K, corruption, image size, features dim): its
latents come from one random stream and all rendering nuisances from another (the feature vectors' noise from a
third), all derived from those numbers with ``numpy.random.SeedSequence``. So a shard's bytes do not depend on which process wrote it or in which order,
and ``shard_latents`` can recompute a shard's latents without rendering anything.

Per sample ``<key>`` the tar holds ``<key>.jpg|png``, ``<key>.wav|flac``, ``<key>.txt|json`` and ``<key>.cls``
(the label as ASCII digits); with ``features_dim > 0`` also ``<key>.npy``, the style's feature vector (float32
``[features_dim]``). The features variant's image, audio and text members are byte for byte those of the
three-modality shards of the same settings (only the labels and the ``.npy`` members differ). Keys look like
``train000003_000042`` (no dots: webdataset splits on them).

Usage::

    stats = write_shard(ShardSpec(path="out/train-000000.tar", split="train", index=0, num_samples=500,
                                  seed=0, num_symbols=4, corruption=DEFAULT_CORRUPTION))
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import numpy as np
import webdataset as wds

from mm_ray.demo.latents import FEATURES_OBSERVATION, Latents, draw_latents
from mm_ray.demo.render_audio import SAMPLE_RATES, render_audio
from mm_ray.demo.render_features import render_features
from mm_ray.demo.render_image import make_noise_bank, render_image
from mm_ray.demo.render_text import render_text

SPLITS = ("train", "val")
PNG_FRACTION = 0.15
FLAC_FRACTION = 0.5
STEREO_FRACTION = 0.3
JSON_FRACTION = 0.2
TAR_MTIME = 946684800  # 2000-01-01: a fixed member time keeps the tar bytes reproducible


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """Everything that determines one shard's bytes, plus where to write it."""

    path: str
    split: str
    index: int
    num_samples: int
    seed: int
    num_symbols: int
    corruption: dict[str, float]
    image_size: tuple[int, int] = (256, 512)
    features_dim: int = 0
    """Length of the features variant's ``.npy`` vectors; 0 = the three-modality benchmark."""


def shard_file_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def sample_key(split: str, shard_index: int, sample_index: int) -> str:
    return f"{split}{shard_index:06d}_{sample_index:06d}"


def _stream(seed: int, split: str, index: int, purpose: int) -> np.random.Generator:
    # spawn_key keeps streams of different (split, shard, purpose) independent for the same user seed
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    seq = np.random.SeedSequence(entropy=seed, spawn_key=(SPLITS.index(split), index, purpose))
    return np.random.default_rng(seq)


def shard_latents(
    *,
    seed: int,
    split: str,
    shard_index: int,
    num_samples: int,
    num_symbols: int,
    corruption: dict[str, float] | None = None,
    features: bool = False,
) -> Latents:
    """The latents (clean and as rendered) of every sample of one shard, in key order."""
    rng = _stream(seed, split, shard_index, 0)
    return draw_latents(rng, num_samples, num_symbols=num_symbols, corruption=corruption, features=features)


def _draw_containers(rng: np.random.Generator) -> dict:
    return {
        "image": "png" if rng.random() < PNG_FRACTION else "jpg",
        "audio": "flac" if rng.random() < FLAC_FRACTION else "wav",
        "text": "json" if rng.random() < JSON_FRACTION else "txt",
        "sample_rate": int(SAMPLE_RATES[rng.integers(len(SAMPLE_RATES))]),
        "channels": 2 if rng.random() < STEREO_FRACTION else 1,
    }


def render_sample(
    rng: np.random.Generator,
    lat: Latents,
    i: int,
    *,
    num_symbols: int,
    image_size: tuple[int, int],
    noise_bank: np.ndarray | None,
) -> tuple[dict[str, bytes], dict]:
    """Members (extension -> bytes) of sample ``i`` of ``lat``, and the container choices made for it."""
    fmt = _draw_containers(rng)
    lo, hi = image_size
    size = (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
    obs = {name: int(values[i]) for name, values in lat.observed.items()}
    members = {
        fmt["image"]: render_image(
            rng,
            color=obs["image_color"],
            shape=obs["image_shape"],
            size=size,
            container=fmt["image"],
            noise_bank=noise_bank,
        ),
        fmt["audio"]: render_audio(
            rng,
            pitch=obs["audio_pitch"],
            num_symbols=num_symbols,
            sample_rate=fmt["sample_rate"],
            channels=fmt["channels"],
            container=fmt["audio"],
        ),
        fmt["text"]: render_text(rng, topic=obs["text_topic"], container=fmt["text"]),
        "cls": str(int(lat.label[i])).encode("ascii"),
    }
    return members, fmt


def write_shard(spec: ShardSpec) -> dict:
    """Render and write one shard (atomically: a temp file renamed into place); returns its stats.

    Stats: ``{"file", "split", "index", "num_samples", "bytes", "formats": {"jpg": n, ..., "sr_8000": n,
    "channels_1": n, ...}}``. Top-level and picklable, so a spawn-started process pool can run it.
    """
    lat = shard_latents(
        seed=spec.seed,
        split=spec.split,
        shard_index=spec.index,
        num_samples=spec.num_samples,
        num_symbols=spec.num_symbols,
        corruption=spec.corruption,
        features=spec.features_dim > 0,
    )
    rng = _stream(spec.seed, spec.split, spec.index, 1)
    # Its own stream: the other members' nuisances are drawn exactly as without the features variant.
    features_rng = _stream(spec.seed, spec.split, spec.index, 2)
    noise_bank = make_noise_bank(rng, max_side=spec.image_size[1])
    formats: Counter = Counter()
    tmp_path = f"{spec.path}.tmp{os.getpid()}"
    with open(tmp_path, "wb") as stream, wds.TarWriter(stream, encoder=False, mtime=TAR_MTIME) as writer:
        for i in range(spec.num_samples):
            members, fmt = render_sample(
                rng, lat, i, num_symbols=spec.num_symbols, image_size=spec.image_size, noise_bank=noise_bank
            )
            if spec.features_dim:
                style = int(lat.observed[FEATURES_OBSERVATION][i])
                members["npy"] = render_features(
                    features_rng, style=style, num_symbols=spec.num_symbols, dim=spec.features_dim
                )
                formats.update(["npy"])
            writer.write({"__key__": sample_key(spec.split, spec.index, i), **members})
            formats.update([fmt["image"], fmt["audio"], fmt["text"]])
            formats.update([f"sr_{fmt['sample_rate']}", f"channels_{fmt['channels']}"])
    os.replace(tmp_path, spec.path)
    return {
        "file": os.path.basename(spec.path),
        "split": spec.split,
        "index": spec.index,
        "num_samples": spec.num_samples,
        "bytes": os.path.getsize(spec.path),
        "formats": dict(formats),
    }

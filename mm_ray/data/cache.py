"""The preprocessed cache: model-ready rows as Parquet plus a manifest, written once, read by every run.

Layout of a cache directory::

    DIR/data/*.parquet       model-ready rows (uint8 images, token ids, log-mels, labels, masks)
    DIR/tokenizer.json       the tokenizer the text column was made with
    DIR/quarantine.jsonl     one line per quarantined sample / ignored member / shard problem
    DIR/manifest.json        counts, quarantine summary, shapes, config hash, source shards

Training and sweeps read ``DIR/data`` with ``read_cache`` and never decode again. The config
hash covers every setting that changes the bytes of the cache, so a consumer can tell whether
a cache matches its config.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import ray.data

from mm_ray.config.schema import AudioConfig, Config
from mm_ray.preprocess.mel import feature_rows

MANIFEST = "manifest.json"


def preprocess_config_hash(cfg: Config, tokenizer_json: str) -> str:
    """sha256 over the settings that determine the cache's content."""
    relevant = {
        "image": vars(cfg.image),
        "audio": vars(cfg.audio),
        "text_max_length": cfg.text.max_length,
        "members": vars(cfg.data.members),
        "required": cfg.data.required_modalities,
        "label_required": cfg.data.label_required,
        "tokenizer_sha256": hashlib.sha256(tokenizer_json.encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def with_cache_preprocessing(resolved: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """``resolved`` (``as_dict`` of a run's config) with the image, audio and text-length settings the cache in
    ``manifest`` was preprocessed with: what a model trained on that cache really saw, whatever the run's
    own config said. A manifest without a ``preprocess`` section leaves ``resolved`` as it is."""
    pre = manifest.get("preprocess")
    if not pre:
        return resolved
    out = {**resolved, "image": dict(pre["image"]), "audio": dict(pre["audio"])}
    out["text"] = {**resolved.get("text", {}), "max_length": pre["text_max_length"]}
    return out


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = out_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(cache_dir: str | Path) -> dict[str, Any]:
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{cache_dir} is not a preprocessed cache (no {MANIFEST}); run `mm-ray preprocess`"
        )
    return json.loads(path.read_text())


def read_cache(cache_dir: str | Path) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """The cached model-ready rows as a Ray dataset, and the cache's manifest."""
    manifest = read_manifest(cache_dir)
    return ray.data.read_parquet(str(Path(cache_dir) / "data")), manifest


def audio_feature_rows(audio: AudioConfig) -> int:
    """Rows of one clip's cached audio features (the audio model's input channels) under ``audio``."""
    return feature_rows(audio.features, audio.n_mels, audio.n_mfcc, audio.deltas)


def cache_manifest(
    cfg: Config, summary: dict[str, Any], urls: list[str], tokenizer_json: str, seconds: float
) -> dict[str, Any]:
    """The manifest written next to the cached rows."""
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config_hash": preprocess_config_hash(cfg, tokenizer_json),
        "shards": urls,
        "samples_ok": summary["samples_ok"],
        "samples_read": summary["samples_read"],
        "samples_quarantined": summary["samples_quarantined"],
        "quarantine_reasons": summary["quarantine_reasons"],
        "shapes": {
            "image": [3, cfg.image.size, cfg.image.size],
            "input_ids": [cfg.text.max_length],
            "audio": [
                audio_feature_rows(cfg.audio),
                1 + int(cfg.audio.sample_rate * cfg.audio.duration_s) // cfg.audio.hop_length,
            ],
        },
        "tokenizer": "tokenizer.json",
        "preprocess": {
            "image": vars(cfg.image),
            "audio": vars(cfg.audio),
            "text_max_length": cfg.text.max_length,
        },
        "seconds": round(seconds, 2),
    }

"""``model.encoders`` -> the encoder specs a ``ModelSpec`` stores, checked on the driver before any worker starts.

    specs = resolve_encoders([EncoderRequest(name, encoder_config, spec.library, settings, shapes), ...],
                             vocab_size=4096)
    # {"image": EncoderSpec(source="torchvision", kind="torchvision_image", arch="resnet18", path=..., ...)}

Every mistake is a ``ConfigError`` naming the key at fault: an unknown architecture, a missing weights file or
model directory, a model directory whose ``config.json`` names a model type the installed ``transformers`` does
not have (no remote code is ever run), a text model without ``tokenizer.json``, an audio model whose mel bins or
sample rate differ from ``audio.*``. Which library serves which modality is the modality's own word
(``ModalitySpec.library``: source -> kind: ``torchvision_image``, ``hf_text``, ``hf_audio``). A spec
(``mm_ray.models.pretrained.encoder_spec.EncoderSpec``) holds what rebuilding the encoder needs besides its
weights: the ``config.json`` content (``hf_config``) and the audio feature statistics (``feature_stats``), so a
checkpoint is self-contained.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import AudioConfig, EncoderConfig
from mm_ray.models.pretrained.backbones import (
    AST_FEATURES,
    AST_MODEL_TYPE,
    HF_AUDIO,
    HF_TEXT,
    TORCHVISION_IMAGE,
)
from mm_ray.models.pretrained.encoder_spec import EncoderSpec, FeatureStats

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
STATE_DICT_SUFFIXES = (".pt", ".pth")


@dataclasses.dataclass(frozen=True)
class EncoderRequest:
    """One modality's ``model.encoders.<name>`` setting with what checking it needs."""

    modality: str
    config: EncoderConfig
    library: Mapping[str, str]
    """The modality's library sources -> backbone kinds (``ModalitySpec.library``)."""
    settings: Any
    """The modality's preprocessing settings (an audio model checks its mel bins and rate against them)."""
    shape: Sequence[int]
    """The per-row shape of the modality's main column (a text model: ``[max_length]``; audio: ``[mels, T]``)."""


def resolve_encoders(requests: Iterable[EncoderRequest], *, vocab_size: int) -> dict[str, EncoderSpec]:
    """The spec of every non-builtin encoder among ``requests`` ({} when all are mm_ray's own)."""
    specs: dict[str, EncoderSpec] = {}
    for request in requests:
        enc = request.config
        if enc.source == "builtin":
            continue
        key = f"model.encoders.{request.modality}"
        kind = request.library.get(enc.source)
        if kind is None:
            offered = ", ".join(["builtin", *request.library])
            raise ConfigError(
                f"{key}.source: {enc.source} does not build {request.modality} encoders ({offered})"
            )
        backbone = _torchvision(enc, key) if kind == TORCHVISION_IMAGE else _transformers(enc, key)
        spec = EncoderSpec(source=enc.source, kind=kind, **_schedule(enc, key), **backbone)
        if kind == HF_TEXT:
            _check_text(spec, key, request.modality, request.shape[0], vocab_size)
        elif kind == HF_AUDIO:
            spec = dataclasses.replace(spec, feature_stats=_check_audio(spec, enc, key, request))
        specs[request.modality] = spec
    return specs


def _schedule(enc: EncoderConfig, key: str) -> dict[str, Any]:
    if enc.unfreeze_after is not None and (not enc.freeze or enc.unfreeze_after < 0):
        raise ConfigError(
            f"{key}.unfreeze_after: needs {key}.freeze=true and a value >= 0, got {enc.unfreeze_after}"
        )
    return {"freeze": enc.freeze, "unfreeze_after": enc.unfreeze_after}


def _torchvision(enc: EncoderConfig, key: str) -> dict[str, Any]:
    from mm_ray.libraries import torchvision_models

    if enc.pool not in ("default", "avg"):
        raise ConfigError(
            f"{key}.pool: a torchvision model pools with its own global average ('avg'), got {enc.pool!r}"
        )
    models = torchvision_models(f"{key}.source")
    known = models.list_models(module=models)  # the classification models only
    if enc.arch not in known:
        close = difflib.get_close_matches(str(enc.arch), known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{key}.arch: {enc.arch!r} is not a torchvision classification model{hint}")
    for name in ("mean", "std"):
        value = getattr(enc, name)
        if value is not None and len(value) != 3:
            raise ConfigError(f"{key}.{name}: one value per RGB channel (3), got {value}")
    return {
        "arch": enc.arch,
        "path": _state_dict_file(enc.path, f"{key}.path") if enc.path else None,
        "pool": "avg",
        "mean": enc.mean,
        "std": enc.std,
    }


def _state_dict_file(path: str, key: str) -> str:
    """``path`` itself, or the one ``*.pt``/``*.pth`` file in the directory ``path``."""
    p = Path(path).expanduser()
    if p.is_dir():
        found = sorted(f for f in p.iterdir() if f.suffix in STATE_DICT_SUFFIXES)
        if len(found) != 1:
            raise ConfigError(
                f"{key}: {path} holds {len(found)} *.pt/*.pth files; name the state dict file itself"
            )
        p = found[0]
    if not p.is_file():
        raise ConfigError(f"{key}: no such weights file {path}")
    return str(p.resolve())


def _transformers(enc: EncoderConfig, key: str) -> dict[str, Any]:
    if enc.pool == "avg":
        raise ConfigError(f"{key}.pool: a transformers encoder pools with 'cls' or 'mean', got 'avg'")
    if enc.mean is not None or enc.std is not None:
        raise ConfigError(f"{key}.mean/std: image normalisation applies to torchvision encoders only")
    if not enc.path:
        raise ConfigError(f"{key}.path: the model directory (config.json + weights) is required")
    folder = Path(enc.path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{key}.path: no such model directory {enc.path}")
    hf_config = _read_json(folder / "config.json", f"{key}.path")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(f"{key}.path: {enc.path} has no weights ({' or '.join(WEIGHT_FILES)})")
    # Remote code is never run: drop its pointers, and build only model types the library itself defines.
    hf_config.pop("auto_map", None)
    _check_model_type(hf_config, key)
    return {
        "path": str(folder.resolve()),
        "pool": "mean" if enc.pool == "default" else enc.pool,
        "hf_config": hf_config,
    }


def _check_model_type(hf_config: Mapping[str, Any], key: str) -> None:
    from mm_ray.libraries import transformers_module

    transformers = transformers_module(f"{key}.source")
    model_type = hf_config.get("model_type")
    if model_type not in transformers.CONFIG_MAPPING:
        raise ConfigError(
            f"{key}.path: config.json names model_type {model_type!r}, which transformers "
            f"{transformers.__version__} does not define (remote code is not run)"
        )


def _check_text(spec: EncoderSpec, key: str, modality: str, max_text_len: int, vocab_size: int) -> None:
    config = spec.hf_config or {}
    if config["model_type"] == AST_MODEL_TYPE:
        raise ConfigError(f"{key}.path: {spec.path} is an audio model, not a text encoder")
    if not (Path(str(spec.path)) / "tokenizer.json").is_file():
        raise ConfigError(f"{key}.path: {spec.path} has no tokenizer.json (the text pool tokenizes with it)")
    positions = config.get("max_position_embeddings")
    if positions is not None and max_text_len > positions:
        raise ConfigError(
            f"{modality}.max_length: {max_text_len} tokens, the model at {key}.path reads at most {positions}"
        )
    if config.get("vocab_size") is not None and vocab_size > config["vocab_size"]:
        raise ConfigError(
            f"{key}.path: the tokenizer has {vocab_size} tokens, the model's embedding {config['vocab_size']}; "
            "the training data must be tokenized with the model's own tokenizer.json"
        )


def _check_audio(spec: EncoderSpec, enc: EncoderConfig, key: str, request: EncoderRequest) -> FeatureStats:
    audio: AudioConfig = request.settings
    n_mels, prefix = request.shape[0], request.modality
    config = spec.hf_config or {}
    if config["model_type"] != AST_MODEL_TYPE:
        raise ConfigError(
            f"{key}.path: audio encoders are Audio Spectrogram Transformers on log-mels (model_type "
            f"{AST_MODEL_TYPE!r}), got {config['model_type']!r}"
        )
    if audio.features != "log_mel":
        raise ConfigError(f"{prefix}.features: an AST reads log-mel frames, got {audio.features!r}")
    if config.get("num_mel_bins") != n_mels:
        raise ConfigError(
            f"{prefix}.n_mels: {n_mels} mel bins, the model at {key}.path reads {config.get('num_mel_bins')}"
        )
    extractor = Path(str(spec.path)) / "preprocessor_config.json"
    stats = AST_FEATURES
    if extractor.is_file():
        # The extractor's file is the model's (foreign JSON): its statistics by the names it gives them.
        saved = _read_json(extractor, f"{key}.path")
        known = AST_FEATURES.to_dict()
        stats = FeatureStats(**{**known, **{k: saved[k] for k in known if k in saved}})
        rate = saved.get("sampling_rate")
        if rate is not None and rate != audio.sample_rate:
            raise ConfigError(
                f"{prefix}.sample_rate: {audio.sample_rate} Hz, the model at {key}.path expects {rate} Hz"
            )
    return stats


def _read_json(path: Path, key: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{key}: {path} is not a JSON object")
    return data


def configured(encoders: Iterable[EncoderConfig]) -> bool:
    """Whether any of the modalities' encoders comes from a library."""
    return any(enc.source != "builtin" for enc in encoders)

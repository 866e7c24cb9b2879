"""Backbones from torchvision and HF ``transformers``, each mapping one modality's model-ready tensors to
``[B, features]``, and ``build_encoder``, which wraps one into a ``PretrainedEncoder`` from its ``EncoderSpec``
(``mm_ray.models.pretrained.encoder_spec``: what checkpoints store, made by ``mm_ray.models.pretrained.resolve``)::

    enc = build_encoder("image", EncoderSpec(source="torchvision", kind=TORCHVISION_IMAGE, arch="resnet18",
                                             path="r18.pt", pool="avg", freeze=True, unfreeze_after=2), out_dim=64)
    enc = build_encoder("text", EncoderSpec(source="transformers", kind=HF_TEXT, path="bert-dir", pool="mean",
                                            hf_config={...config.json...}), out_dim=64, load_weights=False)

``load_weights=False`` builds the architecture only (random weights): what a checkpoint restores into, so
evaluation needs neither the weights file nor the model directory. The architecture of a ``transformers`` model
comes from the ``hf_config`` stored in the spec (a ``config.json``'s content is data: only the library's own
classes are built from it; no remote code).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mm_ray.config.load import ConfigError
from mm_ray.encoders.builtin import _token_mask
from mm_ray.libraries import torchvision_models, transformers_module
from mm_ray.modalities.image_decode import IMAGENET_MEAN, IMAGENET_STD
from mm_ray.models.pretrained.encoder import PretrainedEncoder
from mm_ray.models.pretrained.encoder_spec import EncoderSpec, FeatureStats

TORCHVISION_IMAGE = "torchvision_image"
"""A torchvision classification model on normalised images."""
HF_TEXT = "hf_text"
"""A BERT-like ``transformers`` encoder on token ids and a mask."""
HF_AUDIO = "hf_audio"
"""An Audio Spectrogram Transformer (``transformers``) on log-mel frames."""

AST_MODEL_TYPE = "audio-spectrogram-transformer"
AST_FEATURES = FeatureStats(mean=-4.2677393, std=4.5689974, do_normalize=True)
"""``ASTFeatureExtractor``'s defaults (AudioSet statistics of its log-mel filter banks)."""


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier with its last ``Linear`` (the class head) replaced by ``Identity``: normalised
    float images ``[B, 3, H, W]`` -> the architecture's own globally pooled features ``[B, features]``."""

    def __init__(self, model: nn.Module, head: str):
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class HFTextBackbone(nn.Module):
    """A ``transformers`` text encoder: ids and mask ``[B, L]`` -> ``[B, hidden]``, the first token (``cls``) or
    the mean of the attended tokens (``mean``). A row without tokens reads its first position (all-padding
    attention has nothing to attend to)."""

    def __init__(self, model: nn.Module, pool: str, max_len: int):
        super().__init__()
        self.model = model
        self.pool = pool
        self.max_len = max_len

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask, _ = _token_mask(input_ids, attention_mask, self.max_len)
        hidden = self.model(input_ids=input_ids.long(), attention_mask=mask.long()).last_hidden_state
        if self.pool == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


class ASTBackbone(nn.Module):
    """An Audio Spectrogram Transformer on mm_ray's log-mels: ``[B, n_mels, T]`` -> ``[B, hidden]``.

    The frames are padded with zeros or cut to the model's ``max_length`` and normalised with its feature
    extractor's ``(x - mean) / (2 std)``, as ``ASTFeatureExtractor`` does to its filter banks. ``cls``: the model's
    pooled output (the mean of its CLS and distillation tokens); ``mean``: the mean over the patch tokens.
    """

    def __init__(self, model: nn.Module, pool: str, max_length: int, features: FeatureStats | None):
        super().__init__()
        features = features or AST_FEATURES
        self.model = model
        self.pool = pool
        self.max_length = max_length
        self.normalize = features.do_normalize
        self.mean = float(features.mean)
        self.std = float(features.std)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        frames = mels.transpose(1, 2)[:, : self.max_length]  # AST reads [B, time, mel bins]
        if frames.shape[1] < self.max_length:
            frames = nn.functional.pad(frames, (0, 0, 0, self.max_length - frames.shape[1]))
        if self.normalize:
            frames = (frames - self.mean) / (2 * self.std)
        out = self.model(input_values=frames)
        return out.pooler_output if self.pool == "cls" else out.last_hidden_state[:, 2:].mean(dim=1)


def build_encoder(
    modality: str, spec: EncoderSpec, *, out_dim: int, load_weights: bool = True
) -> PretrainedEncoder:
    """The ``PretrainedEncoder`` of ``modality`` that ``spec`` describes (weights read only with ``load_weights``):
    its ``kind`` (``TORCHVISION_IMAGE``, ``HF_TEXT``, ``HF_AUDIO``) says which backbone."""
    key = f"model.encoders.{modality}"
    schedule = {"freeze": spec.freeze, "unfreeze_after": spec.unfreeze_after}
    if spec.kind == TORCHVISION_IMAGE:
        backbone, features = _torchvision(spec, load_weights, key)
        norm = (tuple(spec.mean or IMAGENET_MEAN), tuple(spec.std or IMAGENET_STD))
        return PretrainedEncoder(
            backbone, feature_dim=features, out_dim=out_dim, image_normalization=norm, **schedule
        )
    model = _transformers_model(spec, load_weights, key)
    hidden = int(model.config.hidden_size)
    if spec.kind == HF_TEXT:
        backbone: nn.Module = HFTextBackbone(model, spec.pool, int(model.config.max_position_embeddings))
    else:
        backbone = ASTBackbone(model, spec.pool, int(model.config.max_length), spec.feature_stats)
    return PretrainedEncoder(backbone, feature_dim=hidden, out_dim=out_dim, **schedule)


def _torchvision(spec: EncoderSpec, load_weights: bool, key: str) -> tuple[nn.Module, int]:
    models = torchvision_models(f"{key}.source")
    model = models.get_model(spec.arch, weights=None)
    head = _last_linear(model, f"{key}.arch")
    features = int(model.get_submodule(head).in_features)
    parent, _, attr = head.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())
    if load_weights and spec.path:
        state = load_state_dict(spec.path, f"{key}.path")
        state = {k: v for k, v in state.items() if k not in (f"{head}.weight", f"{head}.bias")}
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ConfigError(
                f"{key}.path: {spec.path} does not hold {spec.arch} weights: missing "
                f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
    return TorchvisionBackbone(model, head), features


def _last_linear(model: nn.Module, key: str) -> str:
    """The name of the last ``nn.Linear`` registered in ``model``: a torchvision classifier's class head."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ConfigError(f"{key}: {type(model).__name__} has no Linear class head to replace")
    return names[-1]


def load_state_dict(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    """The state dict saved at ``path`` (``torch.save(model.state_dict(), path)``), read with ``weights_only``:
    tensors and containers only, nothing unpickled. ``ConfigError`` naming ``key`` otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # OSError, or torch refusing a file that is not weights only
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{key}: cannot read {path} as a state dict: {first}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{key}: {path} is not a state dict (a mapping of names to tensors)")
    return dict(state)


def _transformers_model(spec: EncoderSpec, load_weights: bool, key: str) -> nn.Module:
    transformers = transformers_module(f"{key}.source")
    config = transformers.AutoConfig.for_model(**(spec.hf_config or {}))
    if load_weights:
        model = transformers.AutoModel.from_pretrained(
            spec.path, config=config, local_files_only=True, trust_remote_code=False
        )
    else:
        model = transformers.AutoModel.from_config(config, trust_remote_code=False)
    # A BERT-like model's pooler (dense + tanh over the first token) is not used by either pooling here: its
    # parameters would get no gradient, and DDP would wait for them forever.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model

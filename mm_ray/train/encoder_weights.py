"""A torchvision encoder's starting weights taken from an earlier mm_ray run: pretrain it on one task (the image
alone, say), then fuse with it frozen-then-unfrozen.

    mm-ray train name=img model.preset=unimodal_image model.encoders.image.source=torchvision \\
        model.encoders.image.arch=resnet18 ...
    mm-ray train name=fused model.preset=film model.encoders.image.source=torchvision \\
        model.encoders.image.arch=resnet18 model.encoders.image.path=runs/img model.encoders.image.freeze=true ...

``model.encoders.<m>.path`` naming an mm_ray run directory (its latest checkpoint) or checkpoint, for a modality
whose encoder is a torchvision model: that run's backbone weights for the modality are written as a plain
torchvision state dict into the new run's directory (``<output_dir>/<name>/pretrained/<m>.pt``), and the run
reads that file like any downloaded one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import Config
from mm_ray.modalities.registry import encoder_config_of, modalities_of
from mm_ray.models.pretrained.backbones import TORCHVISION_IMAGE
from mm_ray.train.checkpoint import CHECKPOINT_GLOB, STATE_FILE, CheckpointError, open_checkpoint


def backbone_prefix(modality: str) -> str:
    """Where a ``PretrainedEncoder``'s torchvision model sits in a ``FusionModel``'s state dict."""
    return f"encoders.{modality}.backbone.model."


def with_backbone_weights_from_runs(cfg: Config) -> Config:
    """``cfg`` unchanged, unless a torchvision encoder's ``model.encoders.<m>.path`` is an mm_ray run or
    checkpoint: then ``cfg`` with that path replaced by a state dict file of the run's backbone for ``m`` (same
    ``arch`` required)."""
    for spec in modalities_of(cfg):
        enc = encoder_config_of(cfg, spec)
        if spec.library_kinds.get(enc.source) != TORCHVISION_IMAGE or not enc.path:
            continue
        if not _is_run(Path(enc.path).expanduser()):
            continue
        path = _extract(cfg, spec.name, enc)
        encoders = dataclasses.replace(cfg.model.encoders, **{spec.name: dataclasses.replace(enc, path=path)})
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, encoders=encoders))
    return cfg


def _extract(cfg: Config, modality: str, enc) -> str:
    key = f"model.encoders.{modality}.path"
    try:
        ckpt = open_checkpoint(Path(enc.path).expanduser())
    except CheckpointError as err:
        raise ConfigError(f"{key}: {err}") from None
    spec = ckpt.loop.model.encoders.get(modality)
    if spec is None or spec.kind != TORCHVISION_IMAGE or spec.arch != enc.arch:
        got = (
            f"a torchvision {spec.arch}"
            if spec is not None and spec.arch
            else f"mm_ray's own {modality} encoder"
        )
        raise ConfigError(f"{key}: {ckpt.directory} holds {got}, not a torchvision {enc.arch}")
    prefix = backbone_prefix(modality)
    state = {k[len(prefix) :]: v for k, v in ckpt.state["model"].items() if k.startswith(prefix)}
    out = Path(cfg.output_dir) / cfg.name / "pretrained" / f"{modality}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return str(out)


def _is_run(path: Path) -> bool:
    return path.is_dir() and ((path / STATE_FILE).is_file() or any(path.glob(CHECKPOINT_GLOB)))

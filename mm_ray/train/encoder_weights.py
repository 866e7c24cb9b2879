"""A torchvision image encoder's starting weights taken from an earlier mm_ray run: pretrain it on one task (the
image alone, say), then fuse with it frozen-then-unfrozen.

    mm-ray train name=img model.preset=unimodal_image model.encoders.image.source=torchvision \\
        model.encoders.image.arch=resnet18 ...
    mm-ray train name=fused model.preset=film model.encoders.image.source=torchvision \\
        model.encoders.image.arch=resnet18 model.encoders.image.path=runs/img model.encoders.image.freeze=true ...

``model.encoders.image.path`` naming an mm_ray run directory (its latest checkpoint) or checkpoint: its image
backbone's weights are written as a plain torchvision state dict into the new run's directory
(``<output_dir>/<name>/pretrained/image.pt``), and the run reads that file like any downloaded one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import Config
from mm_ray.train.checkpoint import CHECKPOINT_GLOB, STATE_FILE, CheckpointError, open_checkpoint

BACKBONE_PREFIX = "encoders.image.backbone.model."
"""Where a ``PretrainedEncoder``'s torchvision model sits in a ``FusionModel``'s state dict."""


def with_image_weights_from_run(cfg: Config) -> Config:
    """``cfg`` unchanged, unless ``model.encoders.image.path`` is an mm_ray run or checkpoint: then ``cfg`` with
    that path replaced by a state dict file of the run's torchvision image backbone (same ``arch`` required)."""
    enc = cfg.model.encoders.image
    if enc.source != "torchvision" or not enc.path or not _is_run(Path(enc.path).expanduser()):
        return cfg
    key = "model.encoders.image.path"
    try:
        ckpt = open_checkpoint(Path(enc.path).expanduser())
    except CheckpointError as err:
        raise ConfigError(f"{key}: {err}") from None
    spec = ckpt.loop.model.encoders.get("image")
    if not spec or spec.get("source") != "torchvision" or spec.get("arch") != enc.arch:
        got = f"a torchvision {spec['arch']}" if spec and spec.get("arch") else "mm_ray's own image encoder"
        raise ConfigError(f"{key}: {ckpt.directory} holds {got}, not a torchvision {enc.arch}")
    state = {
        k[len(BACKBONE_PREFIX) :]: v for k, v in ckpt.state["model"].items() if k.startswith(BACKBONE_PREFIX)
    }
    out = Path(cfg.output_dir) / cfg.name / "pretrained" / "image.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    image = dataclasses.replace(enc, path=str(out))
    encoders = dataclasses.replace(cfg.model.encoders, image=image)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, encoders=encoders))


def _is_run(path: Path) -> bool:
    return path.is_dir() and ((path / STATE_FILE).is_file() or any(path.glob(CHECKPOINT_GLOB)))

"""``PretrainedEncoder``: a library backbone, a linear projection to the fusion size, and a freeze schedule.

    enc = PretrainedEncoder(backbone, feature_dim=512, out_dim=64, freeze=True, unfreeze_after=2)
    enc(images)                      # [B, 64]: proj(backbone(images))
    apply_epoch(model, epoch=2)      # True: a backbone was unfrozen at the start of epoch 2 (0-based)

A frozen backbone's parameters have ``requires_grad=False`` and the backbone stays in eval mode whatever
``model.train()`` says, so its BatchNorm statistics and dropout are fixed too; the projection always trains.

Why ``requires_grad`` rather than a learning rate of 0 while frozen: no backward pass runs through a frozen
backbone (on a CPU most of a step's cost), its parameters get no gradient, so AdamW neither moves nor decays
them and keeps no moments for them, and gradient clipping sees only what trains. DDP, though, registers its
gradient hooks for the parameters that require gradients when it wraps the model: the Train worker wraps the
model again at the epoch where ``apply_epoch`` returns True (``mm_ray.train.worker``).
"""

from __future__ import annotations

import torch
from torch import nn


class PretrainedEncoder(nn.Module):
    """``backbone`` (the modality's inputs -> ``[B, feature_dim]``) then ``Linear(feature_dim, out_dim)``.

    Args:
        backbone: a module from ``mm_ray.models.pretrained.backbones``.
        feature_dim: the backbone's output size.
        out_dim: the encoder's output size (``model.fusion_dim``).
        freeze: start with the backbone frozen.
        unfreeze_after: epochs trained frozen before the backbone is unfrozen (None: stays frozen).
        image_normalization: ``(mean, std)`` per RGB channel, for image backbones: ``FusionModel`` normalises
            uint8 images with them before calling the encoder.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        feature_dim: int,
        out_dim: int,
        freeze: bool = False,
        unfreeze_after: int | None = None,
        image_normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    ):
        super().__init__()
        if unfreeze_after is not None and unfreeze_after < 0:
            raise ValueError(f"unfreeze_after must be >= 0 or None, got {unfreeze_after}")
        self.backbone = backbone
        self.proj = nn.Linear(feature_dim, out_dim)
        self.out_dim = out_dim
        self.freeze = freeze
        self.unfreeze_after = unfreeze_after
        if image_normalization is not None:
            self.image_normalization = image_normalization
        self.frozen = False
        self.set_frozen(freeze)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The backbone's inputs (images; ids and mask; log-mels) -> ``[B, out_dim]``."""
        return self.proj(self.backbone(*inputs))

    def frozen_at(self, epoch: int) -> bool:
        """Whether the backbone is frozen during epoch ``epoch`` (0-based) under this schedule."""
        return self.freeze and (self.unfreeze_after is None or epoch < self.unfreeze_after)

    def set_frozen(self, frozen: bool) -> bool:
        """Freeze or unfreeze the backbone; True when that changed anything."""
        changed = frozen != self.frozen
        self.frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.train(
            self.training
        )  # a frozen backbone goes to eval mode now, an unfrozen one follows the model
        return changed

    def train(self, mode: bool = True) -> PretrainedEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self


def apply_epoch(model: nn.Module, epoch: int) -> bool:
    """Set every ``PretrainedEncoder`` in ``model`` to its schedule's state for epoch ``epoch`` (0-based): call it
    at the start of each epoch (a resumed run's first epoch too). True when a parameter's trainability changed
    (a DDP-wrapped model must then be wrapped again)."""
    changed = False
    for module in model.modules():
        if isinstance(module, PretrainedEncoder):
            changed |= module.set_frozen(module.frozen_at(epoch))
    return changed

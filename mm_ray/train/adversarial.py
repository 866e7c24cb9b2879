"""The training step of an adversarial model (``mm_ray.models.cgan``): discriminator, then generator.

    fused, logits, terms = adversarial_step(model, batch, optimizer, grad_clip=1.0, autocast_dtype=None)

``mm_ray.train.loop.train_step`` calls this for any model with ``adversarial = True``, so a Ray Train worker,
the benchmarks' plain loops and ``fit`` train a GAN with the code that trains every other preset. One step:

1. ``model(batch, phase="discriminator")``, backward, update ``model.discriminator_side()`` only (the
   discriminator, and the text encoder whose embedding it learns to match with images);
2. ``model(batch, phase="generator")`` (the generator's loss plus the text classifier's cross-entropy),
   backward, update everything but the discriminator.

Both halves call the (possibly DDP-wrapped) model itself, so each backward all-reduces its gradients; the
Train worker wraps adversarial models with ``find_unused_parameters`` because the discriminator's half does
not touch the generator or the classifier. The run's one AdamW updates only the parameters that hold a
gradient at each ``step()`` (the others' gradients are set to None first): AdamW keeps its moments per
parameter, so this is exactly two optimizers, one per half, while checkpoints, resume and the lr schedule
keep handling one optimizer.
"""

from __future__ import annotations

import torch

from mm_ray.train.autocast import autocast_context
from mm_ray.train.wrapping import unwrap


def adversarial_step(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    grad_clip: float | None,
    autocast_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One discriminator and one generator update; returns the classifier's cross-entropy, its logits and the
    batch's loss terms (``{"d_loss", "g_loss"}`` and the model's others, e.g. ``d_match``), all detached."""

    inner = unwrap(model)
    d_side = {id(p) for p in inner.discriminator_side()}
    discriminator = {id(p) for p in inner.discriminator.parameters()}
    device = next(inner.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(device, autocast_dtype):
        d_out = model(batch, phase="discriminator")
    d_out["d_loss"].backward()
    _step_only(optimizer, lambda p: id(p) in d_side, grad_clip)
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(device, autocast_dtype):
        g_out = model(batch, phase="generator")
    (g_out["g_loss"] + g_out["ce"]).backward()
    _step_only(optimizer, lambda p: id(p) not in discriminator, grad_clip)
    terms = {k: v.detach() for out in (d_out, g_out) for k, v in out.items() if k not in ("ce", "logits")}
    return g_out["ce"].detach(), g_out["logits"].detach(), terms


def _step_only(optimizer: torch.optim.Optimizer, updated, grad_clip: float | None) -> None:
    """``optimizer.step()`` over the parameters for which ``updated(p)`` holds (the others' grads dropped)."""
    kept = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if updated(p):
                kept.append(p)
            else:
                p.grad = None
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(kept, grad_clip)
    optimizer.step()

"""One training epoch in plain PyTorch: no Ray, no config objects.

Usage::

    seed_everything(0)
    model = MyFusionModel(...).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    scheduler = warmup_cosine(optimizer, warmup_steps=100, total_steps=steps_per_epoch * epochs)
    for epoch in range(epochs):
        stats = train_epoch(model, batches, optimizer, scheduler, device="cuda", autocast_dtype=torch.bfloat16)
        stats  # {"loss": mean loss, "accuracy": .., "samples": .., "steps": ..}

``batches`` is any iterable of dicts (the data plane's columns, see ``mm_ray.columns``) holding numpy arrays
or tensors; non-numeric columns such as ``__key__``/``__shard__`` are dropped on the way to the device. The
model is any ``nn.Module`` whose ``forward(batch)`` returns logits ``[B, C]``; the loss is cross-entropy on
the ``label`` column.

With ``aux_loss_weight`` or ``align_loss_weight`` > 0 the model must be a ``FusionModel`` built with the
matching heads (``aux_heads`` / ``align_dim``): the step then calls ``model(batch, with_aux=True)`` and
optimises ``mm_ray.models.objectives.training_loss``. The reported loss stays the fused cross-entropy, so it
compares with the validation loss and across runs with other weights.

Generative models bring their own terms: a model with ``needs_output = True`` (``mvae``) is always called
with ``with_aux=True`` and its ``out.losses`` are optimised too; a model with ``adversarial = True`` (``cgan``)
is trained by ``mm_ray.train.adversarial.adversarial_step``. ``train_epoch`` reports each such term's
sample-weighted mean beside the loss (``recon_image``, ``beta_kl``, ``d_loss``, ...).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from mm_ray.columns import LABEL
from mm_ray.models.objectives import training_loss
from mm_ray.train.autocast import autocast_context

if TYPE_CHECKING:
    from mm_ray.train.spec import LoopConfig

logger = logging.getLogger(__name__)

# numpy dtype kinds that have no tensor equivalent: object, str, bytes, structured.
_NON_NUMERIC_KINDS = frozenset("OUSV")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (every CUDA device too) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def to_device(batch: Mapping[str, Any], device: str | torch.device) -> dict[str, torch.Tensor]:
    """Numeric columns of ``batch`` as tensors on ``device``; other columns (keys, strings) are dropped."""
    device = torch.device(device)
    out: dict[str, torch.Tensor] = {}
    for name, value in batch.items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind in _NON_NUMERIC_KINDS:
                continue
            if device.type == "cpu" and not value.flags.writeable:
                # Ray hands out read-only views; on CPU the tensor would alias them, so copy once here.
                value = value.copy()
            value = torch.from_numpy(value)
        if isinstance(value, torch.Tensor):
            # non_blocking overlaps the host-to-device copy with compute when the source is pinned.
            out[name] = value.to(device, non_blocking=True)
    return out


def train_step(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    grad_clip: float | None,
    autocast_dtype: torch.dtype | None,
    aux_loss_weight: float = 0.0,
    align_loss_weight: float = 0.0,
    align_temperature: float = 0.07,
    terms: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a device batch; returns (mean fused cross-entropy, logits), both detached.

    The step optimises the fused cross-entropy plus, where their weights are > 0, the auxiliary-head and
    contrastive-alignment losses (``mm_ray.models.objectives``), plus a generative model's own terms; each of
    those terms, times the batch size, is added to ``terms`` when given (detached, on the device).
    """
    labels = batch[LABEL].long()
    inner = getattr(model, "module", model)  # the model inside a DDP wrapper
    if getattr(inner, "adversarial", False):
        from mm_ray.train.adversarial import adversarial_step

        fused, logits, own = adversarial_step(
            model, batch, optimizer, grad_clip=grad_clip, autocast_dtype=autocast_dtype
        )
        _add_terms(terms, own, labels.shape[0])
        return fused, logits
    optimizer.zero_grad(set_to_none=True)
    extra = aux_loss_weight > 0 or align_loss_weight > 0 or getattr(inner, "needs_output", False)
    with autocast_context(labels.device, autocast_dtype):
        # A keyword of forward, not another method, so a DDP-wrapped model still syncs its gradients.
        out = model(batch, with_aux=True) if extra else model(batch)
    if extra:
        # The objectives compute in float32 themselves.
        loss, fused = training_loss(
            out,
            labels,
            aux_weight=aux_loss_weight,
            align_weight=align_loss_weight,
            temperature=align_temperature,
        )
        logits = out.logits
        _add_terms(terms, {k: v.detach() for k, v in out.losses.items()}, labels.shape[0])
    else:
        logits = out
        # The loss in float32 even under autocast: bf16 log-softmax loses too much precision.
        loss = fused = F.cross_entropy(logits.float(), labels)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return fused.detach(), logits.detach()


def _add_terms(
    terms: dict[str, torch.Tensor] | None, batch_terms: Mapping[str, torch.Tensor], n: int
) -> None:
    if terms is None:
        return
    for name, value in batch_terms.items():
        terms[name] = terms.get(name, 0.0) + value.double() * n


def train_epoch(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    device: str | torch.device,
    grad_clip: float | None = 1.0,
    autocast_dtype: torch.dtype | None = None,
    log_every: int = 0,
    aux_loss_weight: float = 0.0,
    align_loss_weight: float = 0.0,
    align_temperature: float = 0.07,
) -> dict[str, float | int]:
    """Train ``model`` for one pass over ``batches``; returns the epoch's mean loss, accuracy, samples, steps.

    ``grad_clip`` clips the total gradient norm (None or 0 = off); ``scheduler`` is stepped after every
    optimizer step; ``log_every`` > 0 logs the running loss every that many steps. Loss and accuracy are
    sample-weighted means (NaN when ``batches`` was empty); the loss is the fused cross-entropy. The
    ``aux_loss_weight``/``align_loss_weight``/``align_temperature`` go to ``train_step`` (0 = off).
    """
    model.train()
    # Running sums stay on the device: calling .item() every step would force a CPU-GPU sync per step.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    samples = steps = 0
    terms: dict[str, torch.Tensor] = {}
    for raw in batches:
        batch = to_device(raw, device)
        loss, logits = train_step(
            model,
            batch,
            optimizer,
            grad_clip=grad_clip,
            autocast_dtype=autocast_dtype,
            aux_loss_weight=aux_loss_weight,
            align_loss_weight=align_loss_weight,
            align_temperature=align_temperature,
            terms=terms,
        )
        if scheduler is not None:
            scheduler.step()
        n = logits.shape[0]
        loss_sum += loss.double() * n
        correct += (logits.argmax(dim=-1) == batch[LABEL]).sum()
        samples += n
        steps += 1
        if log_every and steps % log_every == 0:
            lr = optimizer.param_groups[0]["lr"]
            logger.info("step %d  loss %.4f  lr %.3g", steps, loss_sum.item() / samples, lr)
    if samples == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "samples": 0, "steps": 0}
    return {
        "loss": loss_sum.item() / samples,
        "accuracy": correct.item() / samples,
        "samples": samples,
        "steps": steps,
        **{name: total.item() / samples for name, total in terms.items()},
    }


def loop_epoch(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loop: LoopConfig,
    *,
    device: str | torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float | int]:
    """``train_epoch`` with a run's ``LoopConfig`` settings (clipping, auxiliary and alignment losses): what a
    Ray Train worker and the benchmarks' plain loops run, so they train the same way."""
    return train_epoch(
        model,
        batches,
        optimizer,
        scheduler,
        device=device,
        grad_clip=loop.grad_clip or None,
        autocast_dtype=autocast_dtype,
        aux_loss_weight=loop.aux_loss_weight,
        align_loss_weight=loop.align_loss_weight,
        align_temperature=loop.align_temperature,
    )

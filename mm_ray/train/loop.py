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
model is any ``nn.Module`` whose ``forward(batch)`` returns logits ``[B, C]``; the loss is ``fused_loss``
(the task's loss on the ``label`` column: ``mm_ray.tasks``, cross-entropy by default).

Large runs: ``grad_accum_steps`` micro-batches per optimizer step (``forward_backward`` each, gradients synced
on the last, then ``apply_gradients``), fp16 through a ``GradScaler`` (``mm_ray.train.autocast``), and an
``on_step`` hook after every optimizer step (the Train worker's step checkpoints and data position).

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

import dataclasses
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mm_ray.columns import LABEL
from mm_ray.models.objectives import training_loss
from mm_ray.tasks import Classification, Task, task_of
from mm_ray.train.autocast import autocast_context
from mm_ray.train.parallel import gradient_sync
from mm_ray.train.wrapping import unwrap

if TYPE_CHECKING:
    from mm_ray.train.spec import LoopConfig

logger = logging.getLogger(__name__)

CLASSIFICATION = Classification()

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


def fused_loss(
    logits: torch.Tensor, batch: Mapping[str, torch.Tensor], task: Task = CLASSIFICATION
) -> torch.Tensor:
    """The fused prediction's loss on one device batch: what every training step optimises (plus any auxiliary
    terms) and reports: the task's loss against ``label`` (``mm_ray.tasks``; classification: mean
    cross-entropy), computed in float32 even under autocast (a bf16/fp16 log-softmax loses too much precision)."""
    return task.loss(logits, batch[LABEL])


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """How a step trains: clipping, precision, auxiliary losses, gradient accumulation (``LoopConfig`` fields)."""

    grad_clip: float | None = 1.0
    autocast_dtype: torch.dtype | None = None
    aux_loss_weight: float = 0.0
    align_loss_weight: float = 0.0
    align_temperature: float = 0.07
    grad_accum_steps: int = 1
    task: Task = CLASSIFICATION
    """What is predicted: its loss and training score (``mm_ray.tasks``)."""


def forward_backward(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    settings: StepSettings,
    *,
    weight: float = 1.0,
    sync: bool = True,
    scaler: torch.amp.GradScaler | None = None,
    terms: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one micro-batch, its loss times ``weight``; gradients add up in ``.grad``.
    ``sync=False`` keeps them local (the micro-batches before an optimizer step's last, ``gradient_sync``).
    Returns (mean fused loss, logits), both detached; a generative model's own loss terms, times the batch
    size, are added to ``terms`` when given."""
    inner = unwrap(model)
    extra = (
        settings.aux_loss_weight > 0
        or settings.align_loss_weight > 0
        or getattr(inner, "needs_output", False)
    )
    device = batch[LABEL].device
    # The forward too: DDP decides in its forward whether the coming backward all-reduces.
    with gradient_sync(model, sync):
        with autocast_context(device, settings.autocast_dtype):
            # A keyword of forward, not another method, so a DDP-wrapped model still syncs its gradients.
            out = model(batch, with_aux=True) if extra else model(batch)
        logits = out.logits if extra else out
        fused = fused_loss(logits, batch, settings.task)
        loss = fused
        if extra:
            # The objectives compute in float32 themselves.
            loss, _ = training_loss(
                out,
                batch[LABEL].long(),
                aux_weight=settings.aux_loss_weight,
                align_weight=settings.align_loss_weight,
                temperature=settings.align_temperature,
                fused=fused,
            )
            _add_terms(terms, {k: v.detach() for k, v in out.losses.items()}, logits.shape[0])
        loss = loss * weight if weight != 1.0 else loss
        (scaler.scale(loss) if scaler is not None else loss).backward()
    return fused.detach(), logits.detach()


def apply_gradients(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    grad_clip: float | None,
    scaler: torch.amp.GradScaler | None = None,
    divide_by: float | None = None,
) -> None:
    """The optimizer step on the gradients gathered so far: unscale (fp16), divide by ``divide_by`` (the
    samples of an accumulated step, whose micro-batch losses were summed), clip, step. The gradients stay
    (zeroed when the next step begins), so a caller can inspect them."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if divide_by:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(divide_by)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)  # skipped when the unscaled gradients hold inf/NaN
        scaler.update()
    else:
        optimizer.step()


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
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one device batch; returns (mean fused loss, logits), both detached.

    The step optimises ``fused_loss`` plus, where their weights are > 0, the auxiliary-head and
    contrastive-alignment losses (``mm_ray.models.objectives``), plus a generative model's own terms; each of
    those terms, times the batch size, is added to ``terms`` when given (detached, on the device). An
    adversarial model (``cgan``) takes its two-phase step (``mm_ray.train.adversarial``).
    """
    if getattr(unwrap(model), "adversarial", False):
        from mm_ray.train.adversarial import adversarial_step

        fused, logits, own = adversarial_step(
            model, batch, optimizer, grad_clip=grad_clip, autocast_dtype=autocast_dtype
        )
        _add_terms(terms, own, logits.shape[0])
        return fused, logits
    settings = StepSettings(grad_clip, autocast_dtype, aux_loss_weight, align_loss_weight, align_temperature)
    optimizer.zero_grad(set_to_none=True)
    fused, logits = forward_backward(model, batch, settings, scaler=scaler, terms=terms)
    apply_gradients(model, optimizer, grad_clip=grad_clip, scaler=scaler)
    return fused, logits


def _add_terms(
    terms: dict[str, torch.Tensor] | None, batch_terms: Mapping[str, torch.Tensor], n: int
) -> None:
    if terms is None:
        return
    for name, value in batch_terms.items():
        terms[name] = terms.get(name, 0.0) + value.double() * n


StepCallback = Callable[[int, list[Mapping[str, Any]], Callable[[], dict[str, float]]], None]
"""``on_step(optimizer steps so far this epoch, the raw batches of the step just taken, running)``; calling
``running()`` gives this process's epoch sums so far (``samples``, ``loss_sum``, ``correct``; a device sync)."""


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
    grad_accum_steps: int = 1,
    scaler: torch.amp.GradScaler | None = None,
    on_step: StepCallback | None = None,
    task: Task = CLASSIFICATION,
) -> dict[str, float | int]:
    """Train ``model`` for one pass over ``batches``; returns the epoch's mean loss, accuracy, samples, steps.

    ``task`` (``mm_ray.tasks``) gives the loss and the accuracy: top-1 (classification), the fraction of tag
    decisions right (multilabel), NaN (regression).

    ``grad_accum_steps`` micro-batches make one optimizer step (the epoch's last step may have fewer): their
    losses are summed, each times its size, and the gradients divided by the step's samples, so N
    micro-batches of B give the gradient of one batch of N x B (DDP syncs on the last micro-batch only).
    ``grad_clip`` clips the total gradient norm (None or 0 = off); ``scaler`` scales fp16 losses;
    ``scheduler`` is stepped after every optimizer step, then ``on_step`` is called; ``log_every`` > 0 logs
    the running loss every that many optimizer steps. Loss and accuracy are sample-weighted means (NaN when
    ``batches`` was empty); the loss is ``fused_loss``. ``steps`` counts optimizer steps.
    """
    model.train()
    settings = StepSettings(
        grad_clip,
        autocast_dtype,
        aux_loss_weight,
        align_loss_weight,
        align_temperature,
        grad_accum_steps,
        task,
    )
    adversarial = getattr(unwrap(model), "adversarial", False)
    if adversarial and (grad_accum_steps > 1 or scaler is not None):
        raise ValueError("an adversarial model (cgan) trains without gradient accumulation and fp16 scaling")
    # Running sums stay on the device: calling .item() every step would force a CPU-GPU sync per step.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    samples = steps = 0
    terms: dict[str, torch.Tensor] = {}
    group: list[Mapping[str, Any]] = []
    group_samples = 0
    for raw, last in _with_last(batches):
        batch = to_device(raw, device)
        if not group:
            optimizer.zero_grad(set_to_none=True)
        group.append(raw)
        n = batch[LABEL].shape[0]
        group_samples += n
        closes = last or len(group) == grad_accum_steps
        if adversarial:
            loss, logits = train_step(
                model, batch, optimizer, grad_clip=grad_clip, autocast_dtype=autocast_dtype, terms=terms
            )
        else:
            # Accumulating: each loss weighted by its size, the sum divided out at the step.
            weight = float(n) if grad_accum_steps > 1 else 1.0
            loss, logits = forward_backward(
                model, batch, settings, weight=weight, sync=closes, scaler=scaler, terms=terms
            )
            if closes:
                divide = float(group_samples) if grad_accum_steps > 1 else None
                apply_gradients(model, optimizer, grad_clip=grad_clip, scaler=scaler, divide_by=divide)
        loss_sum += loss.double() * n
        correct += task.hits(logits, batch[LABEL]).double()
        samples += n
        if not closes:
            continue
        steps += 1
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            sums = {"samples": samples, "loss_sum": loss_sum, "correct": correct}
            on_step(steps, group, lambda sums=sums: {k: float(v) for k, v in sums.items()})
        group, group_samples = [], 0
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


def _with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """``(item, is_last)`` pairs: one item of look-ahead, so the epoch's last micro-batch closes its step."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


def loop_epoch(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loop: LoopConfig,
    *,
    device: str | torch.device,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    on_step: StepCallback | None = None,
) -> dict[str, float | int]:
    """``train_epoch`` with a run's ``LoopConfig`` settings (clipping, auxiliary and alignment losses, gradient
    accumulation): what a Ray Train worker and the benchmarks' plain loops run, so they train the same way."""
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
        grad_accum_steps=loop.grad_accum_steps,
        scaler=scaler,
        on_step=on_step,
        task=task_of(loop.resolved.task),
    )

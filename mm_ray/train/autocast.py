"""Mixed precision for a step or an evaluation pass, shared by the training loop, its adversarial step and the
metrics (a module of its own, so that none of them imports another for it).

    dtype = autocast_dtype("bf16", device)          # torch.bfloat16 (CPU and GPU); None for fp32
    scaler = grad_scaler("fp16", device)            # a torch.amp.GradScaler for fp16, else None
    with autocast_context(device, dtype):
        logits = model(batch)

``train.precision`` names the dtype; the older ``train.bf16`` flag still means bf16 on GPU workers only.
fp16 needs loss scaling (its exponent range underflows small gradients), bf16 does not (float32's range).
"""

from __future__ import annotations

import contextlib

import torch

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(
    precision: str, device: str | torch.device, *, legacy_bf16: bool = False
) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``; ``legacy_bf16`` (``train.bf16``) turns fp32 into
    bf16 on CUDA only, as that flag always did. fp16 is refused off CUDA: CPU autocast has no use for it."""
    device = torch.device(device)
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"train.precision: {precision!r}, expected one of {sorted(AUTOCAST_DTYPES)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs CUDA (train.use_gpu=true); use bf16 on CPU")
    if precision == "fp32" and legacy_bf16 and device.type == "cuda":
        return torch.bfloat16
    return AUTOCAST_DTYPES[precision]


def scoring_dtype(
    precision: str, device: str | torch.device, *, legacy_bf16: bool = False
) -> torch.dtype | None:
    """The autocast dtype for scoring a run's model on ``device`` (``mm-ray evaluate``): the run's own, except
    fp16 off CUDA, which scores in float32."""
    if precision == "fp16" and torch.device(device).type != "cuda":
        return None
    return autocast_dtype(precision, device, legacy_bf16=legacy_bf16)


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler | None:
    """A ``torch.amp.GradScaler`` for fp16 training (dynamic loss scaling), else None."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def autocast_context(
    device: str | torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the device's type with ``dtype``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)

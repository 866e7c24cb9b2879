"""Training objectives beside the fused cross-entropy: auxiliary unimodal heads and contrastive alignment.

    out = model(batch, with_aux=True)            # a ModelOutput (mm_ray.models.model)
    total, fused = training_loss(out, labels, aux_weight=0.3, align_weight=0.1, temperature=0.07)
    total.backward()                             # fused: the plain cross-entropy, for reporting

- **Auxiliary heads (multi-task)**: each modality's own linear head predicts the label from that
  modality's embedding; its cross-entropy counts only the samples where the modality is present. The
  heads give every encoder a direct learning signal, however much the fusion leans on another modality.
- **Contrastive alignment**: a CLIP-style symmetric InfoNCE between the normalised projections of each
  pair of modalities, over the samples holding both: a sample's image should be nearer its own text than
  any other sample's text in the batch, and the other way round.

Every term is computed so that each head and projection stays in the autograd graph even when a batch
lacks its modality (its term is then 0): DDP's gradient all-reduce expects every parameter to take part.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from mm_ray.models.model import ModelOutput, Tensors


def aux_loss(aux_logits: Tensors, present: Tensors, labels: torch.Tensor) -> torch.Tensor:
    """Sum over modalities of the mean cross-entropy of its head over the rows where it is present."""
    total = labels.new_zeros((), dtype=torch.float32)
    for m, logits in aux_logits.items():
        weight = present[m].to(torch.float32)
        # float32 even under autocast, as for the fused loss.
        ce = F.cross_entropy(logits.float(), labels, reduction="none")
        total = total + (ce * weight).sum() / weight.sum().clamp_min(1.0)
    return total


def info_nce(
    a: torch.Tensor, b: torch.Tensor, temperature: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised ``a`` and ``b`` (``[N, D]``, row i of each is a pair).

    Only the rows where ``valid`` is True take part, as queries and as negatives; with fewer than two
    of them there is nothing to contrast and the loss is 0.
    """
    logits = a.float() @ b.float().T / temperature
    if valid is None:
        valid = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
    # Masking rather than indexing the valid rows: no device-to-host sync for their count, and every
    # input stays in the graph. A masked logit leaves every softmax; an invalid row's loss is discarded.
    keep = valid.unsqueeze(0) & valid.unsqueeze(1)
    logits = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)
    targets = torch.arange(a.shape[0], device=a.device)
    per_row = F.cross_entropy(logits, targets, reduction="none") + F.cross_entropy(
        logits.T, targets, reduction="none"
    )
    weight = valid.to(per_row.dtype)
    return (per_row * weight).sum() / (2 * weight.sum().clamp_min(1.0))


def alignment_loss(aligned: Tensors, present: Tensors, temperature: float) -> torch.Tensor:
    """Mean ``info_nce`` over every pair of modalities, each over the rows where both are present.

    The mean, not the sum, so one weight means the same with two modalities (one pair) or three.
    """
    pairs = list(itertools.combinations(aligned, 2))
    if not pairs:
        return torch.stack([e.sum() * 0.0 for e in aligned.values()]).sum()
    losses = [info_nce(aligned[x], aligned[y], temperature, present[x] & present[y]) for x, y in pairs]
    return torch.stack(losses).mean()


def training_loss(
    out: ModelOutput,
    labels: torch.Tensor,
    *,
    aux_weight: float = 0.0,
    align_weight: float = 0.0,
    temperature: float = 0.07,
    fused: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss to optimise, fused cross-entropy alone).

    ``fused``: the fused prediction's loss computed by the caller (the training step's ``fused_loss``); None =
    the cross-entropy of ``out.logits`` against ``labels``.

    total = fused CE + ``aux_weight`` * ``aux_loss`` + ``align_weight`` * ``alignment_loss`` + the model's own
    ``out.losses`` (a generative model's terms, weighted by the model); a term whose
    weight is 0 is not computed. A positive weight needs the matching heads in the model (built with
    ``aux_heads`` / ``align_dim``), otherwise it is an error rather than a silently missing term; the one
    exception is alignment in a one-modality model, where there is nothing to align.
    """
    if fused is None:
        fused = F.cross_entropy(out.logits.float(), labels)
    total = fused
    if aux_weight > 0:
        if not out.aux_logits:
            raise ValueError(
                "aux_weight > 0 but the model has no auxiliary heads (build it with aux_heads=True)"
            )
        total = total + aux_weight * aux_loss(out.aux_logits, out.present, labels)
    # One modality has no pair to align (build_model adds no projections then): the term is simply 0.
    if align_weight > 0 and len(out.embeddings) > 1:
        if not out.aligned:
            raise ValueError(
                "align_weight > 0 but the model has no projections (build it with align_dim > 0)"
            )
        total = total + align_weight * alignment_loss(out.aligned, out.present, temperature)
    for term in out.losses.values():
        total = total + term
    return total, fused

"""Fusion families: each module turns per-modality embeddings into class logits.

Every module has the same call::

    fusion = GatedFusion(modalities=("image", "audio"), dim=64, hidden=64, num_classes=10)
    logits = fusion(embeddings, present)  # dict modality -> [B, dim], dict modality -> bool [B]

Embeddings of absent modalities have already been replaced by the model's learned "missing"
embedding, so every module can simply use them; the modules whose maths has a natural notion
of "only the present ones" (additive, gated, cross transformer) also use ``present``. Each module
contains its own classifier head because for some families (additive) the head is per modality.
Families and references: see the fusion notes in the docs (MultiBench, TorchMultimodal, LMF, MulT).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

Embeddings = dict[str, torch.Tensor]


def mlp(in_dim: int, hidden: int, out_dim: int, *, layers: int = 1, dropout: float = 0.0) -> nn.Sequential:
    """``layers`` hidden layers of ``Linear -> GELU -> Dropout``, then a linear output layer."""
    blocks: list[nn.Module] = []
    for _ in range(layers):
        blocks += [nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout)]
        in_dim = hidden
    blocks.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*blocks)


def _stack_present(present: Embeddings, modalities: tuple[str, ...]) -> torch.Tensor:
    """bool ``[B, M]``; a row with no modality present counts all as present (avoids 0/0)."""
    mask = torch.stack([present[m] for m in modalities], dim=1)
    return mask | ~mask.any(dim=1, keepdim=True)


class ConcatFusion(nn.Module):
    """Concatenate the embeddings, then an MLP (late concat; a unimodal baseline with one modality;
    early fusion when the encoders are shallow and ``layers`` is larger)."""

    def __init__(
        self,
        *,
        modalities: Sequence[str],
        dim: int,
        hidden: int,
        num_classes: int,
        layers: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.modalities = tuple(modalities)
        self.head = mlp(len(self.modalities) * dim, hidden, num_classes, layers=layers, dropout=dropout)

    def forward(self, emb: Embeddings, present: Embeddings) -> torch.Tensor:
        return self.head(torch.cat([emb[m] for m in self.modalities], dim=1))


class AdditiveFusion(nn.Module):
    """One head per modality; logits averaged over the present modalities. A sum of per-modality
    functions, so it cannot model interactions (the baseline synergy is measured against)."""

    def __init__(
        self, *, modalities: Sequence[str], dim: int, hidden: int, num_classes: int, dropout: float = 0.0
    ):
        super().__init__()
        self.modalities = tuple(modalities)
        self.heads = nn.ModuleDict(
            {m: mlp(dim, hidden, num_classes, dropout=dropout) for m in self.modalities}
        )

    def forward(self, emb: Embeddings, present: Embeddings) -> torch.Tensor:
        logits = torch.stack([self.heads[m](emb[m]) for m in self.modalities], dim=1)  # [B, M, C]
        weights = _stack_present(present, self.modalities).to(logits.dtype).unsqueeze(-1)
        return (logits * weights).sum(dim=1) / weights.sum(dim=1)


class GatedFusion(nn.Module):
    """Softmax weights over the present modalities, computed from the concatenated embeddings; the
    weighted sum goes to an MLP head (TorchMultimodal ``AttentionFusionModule``)."""

    def __init__(
        self, *, modalities: Sequence[str], dim: int, hidden: int, num_classes: int, dropout: float = 0.0
    ):
        super().__init__()
        self.modalities = tuple(modalities)
        self.gate = nn.Linear(len(self.modalities) * dim, len(self.modalities))
        self.head = mlp(dim, hidden, num_classes, dropout=dropout)

    def forward(self, emb: Embeddings, present: Embeddings) -> torch.Tensor:
        stacked = torch.stack([emb[m] for m in self.modalities], dim=1)  # [B, M, D]
        scores = self.gate(stacked.flatten(1))
        scores = scores.masked_fill(~_stack_present(present, self.modalities), float("-inf"))
        weights = scores.softmax(dim=1).unsqueeze(-1)
        return self.head((weights * stacked).sum(dim=1))


class FixedWeightedFusion(nn.Module):
    """A weighted sum of the embeddings with fixed, configured weights, then an MLP head: the gated
    fusion with its learned gate replaced by constants (``model.fusion_weights``), so a sweep can set
    how much each modality counts. Weights are relative: per sample they are renormalised over the
    present modalities; a sample whose present modalities all weigh 0 averages them instead."""

    def __init__(
        self,
        *,
        modalities: Sequence[str],
        dim: int,
        hidden: int,
        num_classes: int,
        weights: dict[str, float],
        dropout: float = 0.0,
    ):
        super().__init__()
        self.modalities = tuple(modalities)
        if set(weights) != set(self.modalities) or any(weights[m] < 0 for m in self.modalities):
            raise ValueError(f"weights must be >= 0 for exactly {self.modalities}, got {weights}")
        # A buffer: saved with the model and moved by .to(), never trained.
        self.register_buffer("weights", torch.tensor([float(weights[m]) for m in self.modalities]))
        self.head = mlp(dim, hidden, num_classes, dropout=dropout)

    def forward(self, emb: Embeddings, present: Embeddings) -> torch.Tensor:
        stacked = torch.stack([emb[m] for m in self.modalities], dim=1)  # [B, M, D]
        mask = _stack_present(present, self.modalities).to(stacked.dtype)
        w = self.weights.to(stacked.dtype) * mask
        w = torch.where(w.sum(dim=1, keepdim=True) > 0, w, mask)
        w = w / w.sum(dim=1, keepdim=True)
        return self.head((w.unsqueeze(-1) * stacked).sum(dim=1))


class FiLMFusion(nn.Module):
    """Multiplicative conditioning: each modality is scaled and shifted by a FiLM layer computed from
    the other modalities, ``h_m * (1 + gamma(ctx)) + beta(ctx)``; the results are concatenated into an
    MLP head. With one modality there is no context and it reduces to late concat."""

    def __init__(
        self, *, modalities: Sequence[str], dim: int, hidden: int, num_classes: int, dropout: float = 0.0
    ):
        super().__init__()
        self.modalities = tuple(modalities)
        n = len(self.modalities)
        self.film = nn.ModuleDict(
            {m: nn.Linear((n - 1) * dim, 2 * dim) for m in self.modalities} if n > 1 else {}
        )
        for layer in self.film.values():
            # Start as the identity (gamma = beta = 0), so training begins from late concat.
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.head = mlp(n * dim, hidden, num_classes, dropout=dropout)

    def forward(self, emb: Embeddings, present: Embeddings) -> torch.Tensor:
        out = []
        for m in self.modalities:
            h = emb[m]
            if m in self.film:
                ctx = torch.cat([emb[o] for o in self.modalities if o != m], dim=1)
                gamma, beta = self.film[m](ctx).chunk(2, dim=1)
                h = h * (1 + gamma) + beta
            out.append(h)
        return self.head(torch.cat(out, dim=1))


def _with_one(h: torch.Tensor) -> torch.Tensor:
    """``[B, D] -> [B, D + 1]``: the constant 1 keeps every lower-order term in the product."""
    return torch.cat([h.new_ones(h.shape[0], 1), h], dim=1)


class TensorFusion(nn.Module):
    """Tensor fusion (TFN): outer product of ``[1; h_m]`` over modalities, then an MLP. Each embedding
    is first projected to ``tensor_dim``, since the product has ``(tensor_dim + 1) ** M`` entries."""

    def __init__(
        self,
        *,
        modalities: Sequence[str],
        dim: int,
        hidden: int,
        num_classes: int,
        tensor_dim: int = 16,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.modalities = tuple(modalities)
        self.proj = nn.ModuleDict({m: nn.Linear(dim, tensor_dim) for m in self.modalities})
        size = (tensor_dim + 1) ** len(self.modalities)
        self.head = mlp(size, hidden, num_classes, dropout=dropout)

    def forward(self, emb: Embeddings, present: Embeddings) -> torch.Tensor:
        fused = None
        for m in self.modalities:
            z = _with_one(self.proj[m](emb[m]))
            fused = z if fused is None else (fused.unsqueeze(2) * z.unsqueeze(1)).flatten(1)
        return self.head(fused)


class LowRankTensorFusion(nn.Module):
    """Low-rank multimodal fusion (LMF): the TFN weight tensor factorized into ``rank`` terms, one
    factor ``[rank, dim + 1, out]`` per modality; fused = sum_r w_r * prod_m ([1; h_m] @ F_m[r]).
    The factors are an ``nn.ParameterList`` so they are registered, move with ``.to()`` and train on
    every device (MultiBench keeps them in a Python list, so on GPU they never train)."""

    def __init__(
        self,
        *,
        modalities: Sequence[str],
        dim: int,
        hidden: int,
        num_classes: int,
        rank: int = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.modalities = tuple(modalities)
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.empty(rank, dim + 1, hidden)) for _ in self.modalities]
        )
        for factor in self.factors:
            nn.init.xavier_normal_(factor)
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        nn.init.xavier_normal_(self.rank_weights)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.head = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, emb: Embeddings, present: Embeddings) -> torch.Tensor:
        fused = None
        for m, factor in zip(self.modalities, self.factors, strict=True):
            z = torch.einsum("bd,rdh->brh", _with_one(emb[m]), factor)  # [B, rank, hidden]
            fused = z if fused is None else fused * z
        out = torch.einsum("or,brh->bh", self.rank_weights, fused) + self.bias
        return self.head(out)


class CrossTransformerFusion(nn.Module):
    """One token per modality (plus a modality-type embedding) and a learned CLS token through a
    transformer; absent modalities are masked out of attention; the CLS output feeds the head."""

    def __init__(
        self,
        *,
        modalities: Sequence[str],
        dim: int,
        hidden: int,
        num_classes: int,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.modalities = tuple(modalities)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = mlp(dim, hidden, num_classes, dropout=dropout)

    def forward(self, emb: Embeddings, present: Embeddings) -> torch.Tensor:
        tokens = torch.stack([emb[m] for m in self.modalities], dim=1) + self.type_embed
        batch = tokens.shape[0]
        x = torch.cat([self.cls.expand(batch, -1, -1), tokens], dim=1)
        keep = torch.stack([present[m] for m in self.modalities], dim=1)
        # The CLS token is always attended, so a row with nothing present still has a valid softmax.
        keep = torch.cat([keep.new_ones(batch, 1), keep], dim=1)
        x = self.transformer(x, src_key_padding_mask=~keep)
        return self.head(self.norm(x[:, 0]))

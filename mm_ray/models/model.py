"""``FusionModel``: encoders for the chosen modalities, missing embeddings, modality dropout, fusion.

Build one with ``mm_ray.models.build_model`` (a named preset), then call it on a batch of the
data plane's model-ready columns, moved to the device as tensors::

    logits = model({"image": uint8 [B,3,S,S], "input_ids": [B,L], "attention_mask": [B,L],
                    "audio": float32 [B,n_mels,T], "has_image": bool [B], ...})  # -> [B, num_classes]

Each modality's spec (``mm_ray.modalities``) says which columns its encoder reads and how (uint8 images are
normalized on the device, by the image spec). Columns of modalities the model does not use are ignored; a
missing presence column means "present in every row".

Missing modalities: where a presence mask is False the encoder's output is replaced by a learned
per-modality "missing" embedding, and the modality's input is zeroed before encoding, so whatever
placeholder (or garbage) the row holds can neither change the logits nor put NaN into gradients.
Modality dropout (training only) hides each present modality with probability ``p`` per sample,
but never all of a sample's present modalities. Subset dropout (training only) shows a sample, with
probability ``p``, one non-empty proper subset of its present modalities drawn uniformly: every subset is
trained as often as every other, so one model can be scored on any of them.

Extra training signals (``mm_ray.models.objectives`` turns them into losses)::

    out = model(batch, with_aux=True)  # ModelOutput: logits, embeddings, present, aux_logits, aligned
    aligned, present = model.embed(batch)  # L2-normalised per-modality embeddings, e.g. for retrieval

``aux_logits`` come from one linear head per modality on that modality's own embedding (present when
the model was built with ``aux_heads``); ``aligned`` from a linear projection per modality into a
shared space (built with ``align_dim``). Both use the encoders' outputs and the real presence, before
the missing embedding and modality dropout, which only concern what the fusion sees.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mm_ray.modalities.spec import ModalitySpec

Tensors = dict[str, torch.Tensor]


def drop_modalities(
    present: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """bool ``[B, M]`` presence -> presence with each present entry dropped with probability ``p``.

    A row that would lose all its present modalities keeps one of them, chosen uniformly, so the
    model always sees something real for every sample that had something real.
    """
    if p <= 0:
        return present
    kept = present & (torch.rand(present.shape, generator=generator, device=present.device) >= p)
    lost_all = present.any(dim=1) & ~kept.any(dim=1)
    # Uniform choice among the present entries: argmax of random scores, absent ones at -1.
    scores = torch.rand(present.shape, generator=generator, device=present.device).masked_fill(~present, -1.0)
    rescue = nn.functional.one_hot(scores.argmax(dim=1), present.shape[1]).bool()
    return torch.where(lost_all.unsqueeze(1), rescue, kept)


def drop_to_subsets(
    present: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """bool ``[B, M]`` presence -> presence in which each row, with probability ``p``, keeps only a non-empty
    proper subset of its present entries, drawn uniformly among all of them.

    With ``M = 3`` and all three present a dropped row shows each of the six proper subsets (three singles,
    three pairs) with probability ``p / 6``; independent per-modality dropout would show the pairs three times as
    often as the singles at ``p = 1/4`` and most rows whole. Rows with fewer than two present entries are kept.
    """
    if p <= 0:
        return present
    rows, width = present.shape
    # Every non-empty subset of the M columns as a bool mask [S, M] (S = 2**M - 1).
    codes = torch.arange(1, 2**width, device=present.device)
    subsets = (codes.unsqueeze(1) >> torch.arange(width, device=present.device)) & 1 == 1
    inside = (
        (subsets.unsqueeze(0) & ~present.unsqueeze(1)).any(dim=2).logical_not()
    )  # subset of present [B, S]
    proper = inside & (subsets.sum(1).unsqueeze(0) < present.sum(1, keepdim=True))
    # Uniform choice among a row's proper subsets: argmax of random scores, the others at -1.
    scores = torch.rand((rows, subsets.shape[0]), generator=generator, device=present.device)
    chosen = subsets[scores.masked_fill(~proper, -1.0).argmax(dim=1)]
    drop = proper.any(dim=1) & (torch.rand(rows, generator=generator, device=present.device) < p)
    return torch.where(drop.unsqueeze(1), chosen, present)


@dataclasses.dataclass
class ModelOutput:
    """What ``FusionModel(batch, with_aux=True)`` returns; per-modality dicts are keyed by modality.

    ``logits``: the fused ``[B, C]`` (what ``model(batch)`` returns). ``embeddings``: each encoder's
    ``[B, dim]``. ``present``: bool ``[B]`` per modality, as in the batch (before modality dropout).
    ``aux_logits``: ``[B, C]`` from each modality's own head ({} without aux heads). ``aligned``:
    L2-normalised float32 ``[B, align_dim]`` projections ({} without them). ``losses``: named, already
    weighted scalar terms a model computes itself (a generative model's reconstruction and KL terms), added to
    the training loss as they are and reported per term.
    """

    logits: torch.Tensor
    embeddings: Tensors
    present: Tensors
    aux_logits: Tensors
    aligned: Tensors
    losses: Tensors = dataclasses.field(default_factory=dict)


class FusionModel(nn.Module):
    """Encoders (one per modality, in the order of ``specs``: the registry's) + missing embeddings + fusion.

    Args:
        specs: the model's modalities' specs, in canonical order (``mm_ray.modalities``): what each encoder
            reads from a batch.
        encoders: modality name -> encoder module producing ``[B, dim]`` (one per spec).
        fusion: a module from ``mm_ray.models.fusion``: ``(embeddings, present) -> logits``.
        dim: the encoders' output size (the size of each missing embedding).
        modality_dropout: per-sample probability of hiding each present modality while training.
        subset_dropout: per-sample probability of showing only a uniformly drawn non-empty proper subset of the
            present modalities while training (``drop_to_subsets``).
        aux_heads: modality -> head ``[B, dim] -> [B, C]`` for the multi-task loss (optional).
        projections: modality -> ``[B, dim] -> [B, align_dim]`` for contrastive alignment (optional).
    """

    def __init__(
        self,
        *,
        specs: Sequence[ModalitySpec],
        encoders: dict[str, nn.Module],
        fusion: nn.Module,
        dim: int,
        modality_dropout: float = 0.0,
        subset_dropout: float = 0.0,
        aux_heads: dict[str, nn.Module] | None = None,
        projections: dict[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.specs = {spec.name: spec for spec in specs}
        if not encoders or set(encoders) != set(self.specs):
            raise ValueError(
                f"encoders must be one per modality of {list(self.specs)}, got {sorted(encoders)}"
            )
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        if not 0.0 <= subset_dropout <= 1.0:
            raise ValueError(f"subset_dropout must be in [0, 1], got {subset_dropout}")
        self.modalities = tuple(self.specs)
        for name, extra in (("aux_heads", aux_heads), ("projections", projections)):
            if extra and set(extra) != set(self.modalities):
                raise ValueError(f"{name} must cover exactly {self.modalities}, got {sorted(extra)}")
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in self.modalities})
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        self.subset_dropout = subset_dropout
        # Empty when unused: they then add nothing to the state dict, so older checkpoints still load.
        self.aux_heads = nn.ModuleDict(aux_heads or {})
        self.projections = nn.ModuleDict(projections or {})

    def forward(self, batch: Tensors, *, with_aux: bool = False) -> torch.Tensor | ModelOutput:
        """Batch of model-ready columns -> logits ``[B, num_classes]``, or a ``ModelOutput`` with
        ``with_aux`` (a keyword, not a separate method, so it also passes through DDP's forward)."""
        present, raw = self._encode_all(batch)
        seen = present
        if self.training and (self.modality_dropout > 0 or self.subset_dropout > 0):
            stacked = torch.stack([present[m] for m in self.modalities], 1)
            stacked = drop_to_subsets(stacked, self.subset_dropout)
            stacked = drop_modalities(stacked, self.modality_dropout)
            seen = {m: stacked[:, i] for i, m in enumerate(self.modalities)}
        emb = {m: torch.where(seen[m].unsqueeze(1), raw[m], self.missing[m].to(raw[m].dtype)) for m in raw}
        logits = self.fusion(emb, seen)
        if not with_aux:
            return logits
        return ModelOutput(
            logits=logits,
            embeddings=raw,
            present=present,
            aux_logits={m: head(raw[m]) for m, head in self.aux_heads.items()},
            aligned=self._align(raw) if self.projections else {},
        )

    def embed(self, batch: Tensors) -> tuple[Tensors, Tensors]:
        """(modality -> L2-normalised float32 ``[B, D]``, modality -> presence bool ``[B]``).

        The aligned projections when the model has them (cross-modal retrieval compares these), else the
        encoders' normalised outputs. Rows where a modality is absent hold its embedding of zeroed input:
        mask them with the presence.
        """
        present, raw = self._encode_all(batch)
        if self.projections:
            return self._align(raw), present
        return {m: F.normalize(e.float(), dim=-1) for m, e in raw.items()}, present

    def _encode_all(self, batch: Tensors) -> tuple[Tensors, Tensors]:
        present = {m: self._presence(batch, m) for m in self.modalities}
        return present, {m: self._encode(batch, m, present[m]) for m in self.modalities}

    def _align(self, raw: Tensors) -> Tensors:
        # float32 before normalising: the contrastive logits divide by a small temperature.
        return {m: F.normalize(proj(raw[m]).float(), dim=-1) for m, proj in self.projections.items()}

    def _presence(self, batch: dict[str, torch.Tensor], modality: str) -> torch.Tensor:
        return presence(batch, self.specs[modality])

    def _encode(self, batch: dict[str, torch.Tensor], modality: str, present: torch.Tensor) -> torch.Tensor:
        return encode(self.encoders[modality], batch, self.specs[modality], present)


def presence(batch: dict[str, torch.Tensor], spec: ModalitySpec) -> torch.Tensor:
    """bool ``[B]``: the rows of ``batch`` that hold modality ``spec`` (its presence column, else every row).

    ``ValueError`` when the batch lacks the modality's input columns."""
    lacking = [c for c in spec.column_names if c not in batch]
    if lacking:
        raise ValueError(f"the model uses {spec.name!r} but the batch has no column {lacking}")
    first = batch[spec.column]
    column = batch.get(spec.presence_column)
    if column is None:
        return torch.ones(first.shape[0], dtype=torch.bool, device=first.device)
    return column.to(device=first.device, dtype=torch.bool)


def encode(
    encoder: nn.Module, batch: dict[str, torch.Tensor], spec: ModalitySpec, present: torch.Tensor
) -> torch.Tensor:
    """``encoder``'s ``[B, dim]`` for modality ``spec`` of ``batch``, absent rows' inputs zeroed first."""
    columns = {c: _zero_missing(batch[c], present) for c in spec.column_names}
    if spec.encode is not None:
        return spec.encode(encoder, columns)
    # Float inputs follow the encoder's dtype, so a model moved to float64 / bfloat16 with .to()
    # runs on the float32 columns the data plane produces.
    return encoder(columns[spec.column].to(next(encoder.parameters()).dtype))


def _zero_missing(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    # where(), not multiplication: NaN * 0 is still NaN.
    return torch.where(
        present.view(-1, *([1] * (x.dim() - 1))), x, torch.zeros((), dtype=x.dtype, device=x.device)
    )

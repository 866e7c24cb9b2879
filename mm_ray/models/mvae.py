"""A multimodal VAE (preset ``mvae``): one Gaussian posterior over a shared latent from any subset of modalities.

    model = build_model("mvae", modalities=("image", "text", "audio"), num_classes=4, image_size=32,
                        vocab_size=4096, n_mels=64, audio_frames=101, fusion_dim=32, beta=0.05)
    logits = model(batch)                          # classify from whatever modalities each row holds
    out = model(batch, with_aux=True)              # ModelOutput; out.losses: the ELBO's terms (see below)
    images = model.generate(batch, target="image", sources=("text",), samples=8)  # [B, 8, 3, S, S] in [0, 1]

**Posterior: a product of experts** (Wu & Goodman, MVAE, 2018). Each modality's encoder gives a Gaussian
expert ``N(mu_m, sigma_m^2)`` over the latent; the posterior is the product of the prior ``N(0, I)`` and the
experts of the modalities a row holds (its presence masks): precisions add, the mean is the precision-weighted
mean. An absent modality simply drops out, and a row with none left gets the prior.

**Decoders** for image (transposed convolutions to the model's input size, pixels in [0, 1]) and audio
(the preprocessed log-mel's ``[n_mels, frames]``); text is encoded but not decoded.

**Loss** (``out.losses``, added to the fused cross-entropy by ``mm_ray.models.objectives.training_loss``): for
the full posterior and for each single modality's posterior, the ELBO's reconstruction of *every* decoded
modality the row holds (mean squared error per element: a Gaussian likelihood with fixed variance) plus
``beta`` times the KL divergence to the prior (summed over latent dimensions), and the cross-entropy of the
classifier on that posterior's mean. Reconstructing all modalities from one modality's posterior is what
trains cross-modal generation (text -> image); the unimodal terms are also what let the classifier work from
any subset. Terms are averaged over the subsets. The classifier reads the posterior mean, so ``model(batch)``
is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mm_ray.columns import LABEL
from mm_ray.modalities.audio import AUDIO
from mm_ray.modalities.image import IMAGE
from mm_ray.modalities.spec import ModalitySpec
from mm_ray.models.decoders import ImageDecoder, MelDecoder, standardise_mel, unstandardise_mel
from mm_ray.models.model import ModelOutput, Tensors, encode, presence

DECODABLE = (IMAGE.name, AUDIO.name)
"""Modalities the VAE can generate."""


def product_of_experts(
    mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The product of Gaussian experts ``[B, E, D]`` over the experts where ``mask`` ``[B, E]`` is True.

    Returns the product's (mean, log-variance) ``[B, D]``: precision ``sum_e 1/var_e``, mean
    ``sum_e mu_e / var_e`` over that precision. Every row needs at least one expert (include the prior).
    """
    precision = torch.exp(-logvar) * mask.unsqueeze(-1).to(logvar.dtype)
    total = precision.sum(dim=1)
    mean = (mu * precision).sum(dim=1) / total
    return mean, -torch.log(total)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per row ``[B]``, summed over the latent dimensions."""
    return 0.5 * (logvar.exp() + mu.square() - 1.0 - logvar).sum(dim=-1)


class MultimodalVAE(nn.Module):
    """Encoders + one Gaussian expert head per modality, a product-of-experts posterior, decoders, a classifier.

    Args:
        specs: the modalities' specs (what each encoder reads from a batch), canonical order.
        encoders: modality -> encoder producing ``[B, dim]`` (``mm_ray.encoders``).
        dim: the encoders' output size.
        latent_dim: size of the shared latent.
        decoders: modality (``image`` / ``audio``) -> decoder ``[B, latent_dim] -> model-ready shape``.
        num_classes: classifier outputs.
        beta: weight of the KL term.
    """

    needs_output = True
    """The training step calls ``forward(batch, with_aux=True)`` and optimises ``out.losses`` too."""

    def __init__(
        self,
        *,
        specs: Sequence[ModalitySpec],
        encoders: dict[str, nn.Module],
        dim: int,
        latent_dim: int,
        decoders: dict[str, nn.Module],
        num_classes: int,
        beta: float = 1.0,
    ):
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        unknown = set(decoders) - set(DECODABLE)
        if unknown:
            raise ValueError(f"decoders: {sorted(unknown)} cannot be decoded; decodable: {DECODABLE}")
        self.specs = {s.name: s for s in specs}
        self.modalities = tuple(self.specs)
        self.encoders = nn.ModuleDict(encoders)
        self.experts = nn.ModuleDict({m: nn.Linear(dim, 2 * latent_dim) for m in self.modalities})
        self.decoders = nn.ModuleDict(decoders)
        self.head = nn.Linear(latent_dim, num_classes)
        self.latent_dim = latent_dim
        self.beta = beta

    @property
    def generates(self) -> dict[str, tuple[str, ...]]:
        """Target modality -> the modalities it can be generated from (any subset of these)."""
        return {m: self.modalities for m in self.decoders}

    def forward(self, batch: Tensors, *, with_aux: bool = False) -> torch.Tensor | ModelOutput:
        """Logits ``[B, C]`` from the posterior mean of every modality each row holds; with ``with_aux`` a
        ``ModelOutput`` whose ``losses`` hold the ELBO terms (``recon_<m>``, ``beta_kl``) and ``subset_ce``."""
        present = {m: presence(batch, self.specs[m]) for m in self.modalities}
        experts = self._experts(batch, present)
        mu, _ = self._posterior(experts, present)
        logits = self.head(mu)
        if not with_aux:
            return logits
        return ModelOutput(
            logits=logits,
            embeddings={},
            present=present,
            aux_logits={},
            aligned={},
            losses=self._elbo_terms(batch, experts, present),
        )

    @torch.no_grad()
    def generate(
        self,
        batch: Tensors,
        *,
        target: str,
        sources: Sequence[str],
        samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``samples`` draws of ``target`` per row from the posterior of ``sources`` (those a row holds).

        image: float32 ``[B, samples, 3, S, S]`` in ``[0, 1]``; audio: log-mel ``[B, samples, n_mels, T]``.
        """
        if target not in self.decoders:
            raise ValueError(f"this model decodes {sorted(self.decoders)}, not {target!r}")
        unknown = set(sources) - set(self.modalities)
        if unknown or not sources:
            raise ValueError(f"sources must be a non-empty subset of {self.modalities}, got {list(sources)}")
        # Only the sources are read: the batch need not hold the other modalities' columns at all.
        present = {m: presence(batch, self.specs[m]) for m in self.modalities if m in sources}
        mu, logvar = self._posterior(self._experts(batch, present), present)
        noise = torch.randn(
            (samples, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype
        )  # [S, B, D]
        z = (mu + noise * (0.5 * logvar).exp()).transpose(0, 1).reshape(-1, mu.shape[1])
        out = self.decoders[target](z)
        if target == AUDIO.name:
            out = unstandardise_mel(out)
        return out.view(mu.shape[0], samples, *out.shape[1:])

    def _experts(self, batch: Tensors, present: Tensors) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = {}
        for m in present:
            mu, logvar = (
                self.experts[m](encode(self.encoders[m], batch, self.specs[m], present[m]))
                .float()
                .chunk(2, dim=-1)
            )
            # Bounded log-variance: an expert with a near-zero variance would make the product's precision blow up.
            out[m] = (mu, logvar.clamp(-8.0, 8.0))
        return out

    def _posterior(self, experts, present: Tensors) -> tuple[torch.Tensor, torch.Tensor]:
        """The product of the prior and the experts (modality -> (mu, logvar)) where ``present`` marks a row."""
        names = list(experts)
        prior = torch.zeros_like(experts[names[0]][0])
        mus = torch.stack([prior, *(experts[m][0] for m in names)], dim=1)
        logvars = torch.stack([prior, *(experts[m][1] for m in names)], dim=1)
        mask = torch.stack([torch.ones_like(present[names[0]]), *(present[m] for m in names)], dim=1)
        return product_of_experts(mus, logvars, mask)

    def _elbo_terms(self, batch: Tensors, experts, present: Tensors) -> Tensors:
        """The loss terms averaged over the subsets {all, each single modality}."""
        subsets = [self.modalities] + ([(m,) for m in self.modalities] if len(self.modalities) > 1 else [])
        targets = self._targets(batch)
        labels = batch[LABEL].long()
        sums: dict[str, torch.Tensor] = {}
        for subset in subsets:
            seen = {m: present[m] & (m in subset) for m in self.modalities}
            # Rows holding none of the subset have only the prior: nothing to learn from them here.
            rows = torch.stack([seen[m] for m in self.modalities], 1).any(dim=1).float()
            mu, logvar = self._posterior(experts, seen)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
            terms = {
                f"recon_{m}": self._recon(m, z, targets[m], present[m].float() * rows) for m in self.decoders
            }
            terms["beta_kl"] = self.beta * _masked_mean(kl_to_standard_normal(mu, logvar), rows)
            terms["subset_ce"] = _masked_mean(F.cross_entropy(self.head(mu), labels, reduction="none"), rows)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value
        return {name: value / len(subsets) for name, value in sums.items()}

    def _targets(self, batch: Tensors) -> Tensors:
        out = {}
        if IMAGE.name in self.decoders:
            image = batch[IMAGE.column]
            out[IMAGE.name] = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if AUDIO.name in self.decoders:
            out[AUDIO.name] = standardise_mel(batch[AUDIO.column].float())
        return out

    def _recon(
        self, modality: str, z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        error = (self.decoders[modality](z).float() - target).square().flatten(1).mean(dim=1)
        # Absent rows hold zeros, not data: where() keeps their (possibly non-finite) inputs out of the sum.
        return _masked_mean(torch.where(weight > 0, error, torch.zeros_like(error)), weight)


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def build_mvae(
    specs: Sequence[ModalitySpec],
    encoders: dict[str, nn.Module],
    *,
    dim: int,
    latent_dim: int,
    num_classes: int,
    shapes: Mapping[str, Sequence[int]],
    width: int,
    beta: float,
) -> MultimodalVAE:
    """An ``mvae`` over ``encoders`` with a decoder for each of its decodable modalities; audio is decoded only
    when its frames (the features' length, which a run's model spec records) are known (> 0) in ``shapes``."""
    decoders: dict[str, nn.Module] = {}
    if IMAGE.name in encoders:
        decoders[IMAGE.name] = ImageDecoder(
            in_dim=latent_dim, image_size=shapes[IMAGE.column][-1], width=width
        )
    if AUDIO.name in encoders and shapes[AUDIO.column][-1] > 0:
        n_mels, frames = shapes[AUDIO.column]
        decoders[AUDIO.name] = MelDecoder(in_dim=latent_dim, n_mels=n_mels, frames=frames, width=width)
    return MultimodalVAE(
        specs=specs,
        encoders=encoders,
        dim=dim,
        latent_dim=latent_dim,
        decoders=decoders,
        num_classes=num_classes,
        beta=beta,
    )

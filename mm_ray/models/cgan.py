"""A conditional GAN from text to image (preset ``cgan``), trained in the same step as a text classifier.

    model = build_model("cgan", modalities=("image", "text"), num_classes=4, image_size=32, vocab_size=4096,
                        n_mels=64, fusion_dim=32, width=32)
    logits = model(batch)                                  # the text classifier (images are not read)
    losses = model(batch, phase="discriminator")           # {"d_loss"}
    losses = model(batch, phase="generator")               # {"g_loss", "ce", "logits"}
    images = model.generate(batch, target="image", sources=("text",), samples=8)  # [B, 8, 3, S, S] in [0, 1]

The text encoder is trained by the classifier's cross-entropy only; the generator and the discriminator are
conditioned on its embedding *detached*, so the adversarial game cannot bend the text features. The generator
maps [noise; text embedding] through the VAE's image decoder architecture (``mm_ray.models.decoders``). The
discriminator is a small CNN with a projection head (Miyato & Koyama, 2018): its score is ``w . h(x) +
h(x) . V c`` for image features ``h(x)`` and condition ``c``, so it judges whether the image fits the text, and
it is also shown real images with another row's caption as fakes (the "matching-aware" loss of Reed et al.,
2016). Losses are the non-saturating logistic ones, over the rows holding both text and image.

``mm_ray.train.adversarial`` runs the alternating steps (discriminator, then generator + classifier).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mm_ray.columns import IMAGE, LABEL
from mm_ray.models.decoders import ImageDecoder
from mm_ray.models.model import ModelOutput, Tensors, encode, presence

PHASES = ("discriminator", "generator")


class Discriminator(nn.Module):
    """Three stride-2 convolutions (LeakyReLU), global average pooling and a projection head."""

    def __init__(self, *, cond_dim: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(channels, 1)
        self.embed = nn.Linear(cond_dim, channels, bias=False)

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` ``[B, 3, S, S]`` and conditions ``[B, cond_dim]`` -> logits ``[B]``."""
        h = self.features(images * 2.0 - 1.0).mean(dim=(2, 3))
        return self.score(h).squeeze(-1) + (h * self.embed(cond)).sum(dim=-1)


class TextToImageGAN(nn.Module):
    """A text encoder + classifier head, a generator and a discriminator (see the module docstring)."""

    adversarial = True
    """The training step is ``mm_ray.train.adversarial.adversarial_step`` (two alternating updates)."""

    def __init__(
        self,
        *,
        text_encoder: nn.Module,
        dim: int,
        num_classes: int,
        image_size: int,
        noise_dim: int = 16,
        width: int = 32,
    ):
        super().__init__()
        self.modalities = ("text",)
        self.encoders = nn.ModuleDict({"text": text_encoder})
        self.head = nn.Linear(dim, num_classes)
        self.generator = ImageDecoder(in_dim=noise_dim + dim, image_size=image_size, width=width)
        self.discriminator = Discriminator(cond_dim=dim, width=width)
        self.noise_dim = noise_dim

    @property
    def generates(self) -> dict[str, tuple[str, ...]]:
        """Target modality -> the modalities it can be generated from."""
        return {"image": ("text",)}

    def forward(
        self, batch: Tensors, *, with_aux: bool = False, phase: str | None = None
    ) -> torch.Tensor | ModelOutput | Tensors:
        """Text-classifier logits ``[B, C]`` (a ``ModelOutput`` with ``with_aux``), or with ``phase`` the loss
        terms of that half of the adversarial step. A keyword of ``forward`` so both halves pass through DDP."""
        present = presence(batch, "text")
        emb = encode(self.encoders["text"], batch, "text", present)
        if phase is None:
            logits = self.head(emb)
            if not with_aux:
                return logits
            return ModelOutput(
                logits=logits, embeddings={"text": emb}, present={"text": present}, aux_logits={}, aligned={}
            )
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        cond = emb.detach().float()
        rows = (present & presence(batch, "image")).float()
        real = batch[IMAGE].float() / 255.0 if batch[IMAGE].dtype == torch.uint8 else batch[IMAGE].float()
        noise = torch.randn(cond.shape[0], self.noise_dim, device=cond.device)
        if phase == "discriminator":
            with torch.no_grad():
                fake = self.generator(torch.cat([noise, cond], dim=1))
            # Real images with another row's caption: the discriminator must judge the pair, not the image alone.
            wrong = self.discriminator(real, cond.roll(1, dims=0))
            loss = F.softplus(-self.discriminator(real, cond)) + 0.5 * (
                F.softplus(self.discriminator(fake, cond)) + F.softplus(wrong)
            )
            return {"d_loss": _masked_mean(loss, rows)}
        logits = self.head(emb)
        fake = self.generator(torch.cat([noise, cond], dim=1))
        g_loss = _masked_mean(F.softplus(-self.discriminator(fake, cond)), rows)
        ce = F.cross_entropy(logits.float(), batch[LABEL].long())
        return {"g_loss": g_loss, "ce": ce, "logits": logits}

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
        """``samples`` images per row from its text: float32 ``[B, samples, 3, S, S]`` in ``[0, 1]``."""
        if target != "image" or tuple(sources) != ("text",):
            raise ValueError(
                f"this model generates image from text only, not {target!r} from {list(sources)}"
            )
        cond = encode(self.encoders["text"], batch, "text", presence(batch, "text")).float()
        b = cond.shape[0]
        noise = torch.randn(b * samples, self.noise_dim, generator=generator, device=cond.device)
        images = self.generator(torch.cat([noise, cond.repeat_interleave(samples, dim=0)], dim=1))
        return images.view(b, samples, *images.shape[1:])


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum() / weight.sum().clamp_min(1.0)

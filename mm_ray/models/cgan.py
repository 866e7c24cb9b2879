"""A conditional GAN from text to image (preset ``cgan``), trained in the same step as a text classifier.

    model = build_model("cgan", modalities=("image", "text"), num_classes=4, image_size=32, vocab_size=4096,
                        n_mels=64, fusion_dim=32, width=32)
    logits = model(batch)                                  # the text classifier (images are not read)
    losses = model(batch, phase="discriminator")           # {"d_loss", "d_match"}
    losses = model(batch, phase="generator")               # {"g_loss", "g_match", "g_spread", "ce", "logits"}
    images = model.generate(batch, target="image", sources=("text",), samples=8)  # [B, 8, 3, S, S] in [0, 1]

The generator maps [noise; text embedding] through the VAE's image decoder architecture
(``mm_ray.models.decoders``) and never moves the text encoder (its condition is detached). The discriminator is
a small CNN, every layer spectrally normalised, with a projection head (Miyato & Koyama, 2018): image i's logit
with caption j is ``w . h(x_i) + h(x_i) . V c_j``, so it judges whether the image fits the text. Its terms:

- hinge loss (``loss="hinge"``; ``"logistic"`` is the non-saturating one): real images with their own caption
  up, generated images and real images with another row's caption down (the "matching-aware" loss of Reed et
  al., 2016), over the rows holding both text and image;
- the matching term (``match_weight``): a cross-entropy over the batch's captions of "which caption is this
  real image's own", read from the same projections ``h(x_i) . V c_j``, so the discriminator learns which
  caption goes with which picture even when the adversarial terms saturate;
- the text encoder's embedding is trained by these discriminator terms too (``learn_condition``), besides the
  text classifier's cross-entropy. The label alone does not name the caption's topic (two of the demo's four
  topics carry no label information in their text), so an encoder trained on it alone gives a condition
  that cannot say which background to draw; matching captions with real images can.

The generator is rewarded, besides fooling the discriminator, by the same matching term on its own images
(the auxiliary-classifier idea of AC-GAN, with the captions of the batch as the classes), so an image that does
not show its caption's topic costs it even when the discriminator's score is saturated. That term alone pulls
every draw for one caption to one typical image, so the generator also pays ``mode_seeking / ratio``, where
``ratio`` is the mean pixel difference of two draws for the same captions over the mean difference of their
noise (the mode-seeking term of Mao et al., 2019): large when the noise changes nothing.
``mm_ray.train.adversarial`` runs the alternating steps (discriminator, then generator + classifier).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mm_ray.columns import LABEL
from mm_ray.modalities.image import IMAGE
from mm_ray.modalities.spec import ModalitySpec
from mm_ray.modalities.text import TEXT
from mm_ray.models.decoders import ImageDecoder
from mm_ray.models.model import ModelOutput, Tensors, encode, presence

PHASES = ("discriminator", "generator")


class Discriminator(nn.Module):
    """Three stride-2 convolutions (LeakyReLU), global average pooling and a projection head, every layer
    spectrally normalised (Miyato et al., 2018: each layer 1-Lipschitz, so the discriminator cannot outrun the
    generator with ever steeper scores)."""

    def __init__(self, *, cond_dim: int, width: int = 32, spectral: bool = True):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, 2 * width, 4 * width):
            layers += [sn(nn.Conv2d(channels, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.score = sn(nn.Linear(channels, 1))
        self.embed = sn(nn.Linear(cond_dim, channels, bias=False))

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in ``[0, 1]`` ``[B, 3, S, S]`` and conditions ``[B, cond_dim]`` -> the unconditional score
        ``[B]`` and the projection of every image onto every condition ``[B, B]`` (row i, column j: image i with
        caption j); image i's logit with caption j is ``score[i] + pairs[i, j]``."""
        h = self.features(images * 2.0 - 1.0).mean(dim=(2, 3))
        return self.score(h).squeeze(-1), h @ self.embed(cond).t()


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
        loss: str = "hinge",
        spectral: bool = True,
        learn_condition: bool = True,
        match_weight: float = 1.0,
        mode_seeking: float = 0.02,
    ):
        super().__init__()
        if loss not in ("hinge", "logistic"):
            raise ValueError(f"loss must be 'hinge' or 'logistic', got {loss!r}")
        self.modalities = (TEXT.name,)
        self.encoders = nn.ModuleDict({TEXT.name: text_encoder})
        self.head = nn.Linear(dim, num_classes)
        self.generator = ImageDecoder(in_dim=noise_dim + dim, image_size=image_size, width=width)
        self.discriminator = Discriminator(cond_dim=dim, width=width, spectral=spectral)
        self.noise_dim = noise_dim
        self.loss = loss
        self.learn_condition = learn_condition
        self.match_weight = match_weight
        self.mode_seeking = mode_seeking
        self.register_load_state_dict_pre_hook(_refuse_old_discriminator)

    def discriminator_side(self) -> list[nn.Parameter]:
        """The parameters the discriminator's half updates: the discriminator's, and the text encoder's when
        the discriminator's matching terms train it too (``learn_condition``)."""
        side = list(self.discriminator.parameters())
        return side + list(self.encoders[TEXT.name].parameters()) if self.learn_condition else side

    @property
    def generates(self) -> dict[str, tuple[str, ...]]:
        """Target modality -> the modalities it can be generated from."""
        return {IMAGE.name: (TEXT.name,)}

    def forward(
        self, batch: Tensors, *, with_aux: bool = False, phase: str | None = None
    ) -> torch.Tensor | ModelOutput | Tensors:
        """Text-classifier logits ``[B, C]`` (a ``ModelOutput`` with ``with_aux``), or with ``phase`` the loss
        terms of that half of the adversarial step. A keyword of ``forward`` so both halves pass through DDP."""
        present = presence(batch, TEXT)
        emb = encode(self.encoders[TEXT.name], batch, TEXT, present)
        if phase is None:
            logits = self.head(emb)
            if not with_aux:
                return logits
            return ModelOutput(
                logits=logits,
                embeddings={TEXT.name: emb},
                present={TEXT.name: present},
                aux_logits={},
                aligned={},
            )
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        rows = (present & presence(batch, IMAGE)).float()
        cond = emb.float()
        noise = torch.randn(cond.shape[0], self.noise_dim, device=cond.device)
        if phase == "discriminator":
            return self._discriminator_loss(
                batch, cond if self.learn_condition else cond.detach(), noise, rows
            )
        out = self._generator_loss(cond.detach(), noise, rows)
        logits = self.head(emb)
        out.update(ce=F.cross_entropy(logits.float(), batch[LABEL].long()), logits=logits)
        return out

    def _generator_loss(self, cond, noise, rows) -> Tensors:
        fake = self.generator(torch.cat([noise, cond], dim=1))
        score, pairs = self.discriminator(fake, cond)
        g_loss = _masked_mean(generator_loss(score + pairs.diagonal(), self.loss), rows)
        out = {"g_loss": g_loss}
        if self.match_weight > 0:
            out["g_match"] = _match_loss(pairs, rows)
            out["g_loss"] = out["g_loss"] + self.match_weight * out["g_match"]
        if self.mode_seeking > 0:
            other = torch.randn_like(noise)
            again = self.generator(torch.cat([other, cond], dim=1))
            ratio = (fake - again).abs().mean() / (noise - other).abs().mean()
            out["g_spread"] = ratio.detach()
            out["g_loss"] = out["g_loss"] + self.mode_seeking / (ratio + 1e-5)
        return out

    def _discriminator_loss(self, batch, cond, noise, rows) -> Tensors:
        images = batch[IMAGE.column]
        real = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        with torch.no_grad():
            fake = self.generator(torch.cat([noise, cond.detach()], dim=1))
        score, pairs = self.discriminator(real, cond)
        fake_score, fake_pairs = self.discriminator(fake, cond)
        matched = score + pairs.diagonal()
        # Real images with another row's caption: the discriminator must judge the pair, not the image alone.
        wrong = score + pairs.roll(1, dims=1).diagonal()
        fake = fake_score + fake_pairs.diagonal()
        out = {"d_loss": _masked_mean(discriminator_loss(matched, wrong, fake, self.loss), rows)}
        if self.match_weight > 0:
            out["d_match"] = _match_loss(pairs, rows)
            out["d_loss"] = out["d_loss"] + self.match_weight * out["d_match"]
        return out

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
        if target != IMAGE.name or tuple(sources) != (TEXT.name,):
            raise ValueError(
                f"this model generates image from text only, not {target!r} from {list(sources)}"
            )
        cond = encode(self.encoders[TEXT.name], batch, TEXT, presence(batch, TEXT)).float()
        b = cond.shape[0]
        noise = torch.randn(b * samples, self.noise_dim, generator=generator, device=cond.device)
        images = self.generator(torch.cat([noise, cond.repeat_interleave(samples, dim=0)], dim=1))
        return images.view(b, samples, *images.shape[1:])


def discriminator_loss(
    matched: torch.Tensor, wrong: torch.Tensor, fake: torch.Tensor, kind: str = "hinge"
) -> torch.Tensor:
    """Per row: real images with their own caption are scored up, real images with another row's caption and
    generated ones down (half weight each). ``hinge``: ``relu(1 - m) + (relu(1 + w) + relu(1 + f)) / 2``,
    no reward for scores past the margin; ``logistic``: the same with ``softplus(-m)``, ``softplus(w)``..."""
    if kind == "hinge":
        return F.relu(1.0 - matched) + 0.5 * (F.relu(1.0 + wrong) + F.relu(1.0 + fake))
    return F.softplus(-matched) + 0.5 * (F.softplus(wrong) + F.softplus(fake))


def generator_loss(fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """Per row, from the discriminator's logits of the generated images: ``-f`` (hinge), ``softplus(-f)``
    (logistic, the non-saturating loss)."""
    return -fake if kind == "hinge" else F.softplus(-fake)


def _refuse_old_discriminator(module, state_dict, prefix, *args) -> None:
    """Weights saved before the discriminator was spectrally normalised name its layers' ``weight`` directly:
    refuse them with the reason rather than a list of missing and unexpected keys."""
    spectral = hasattr(module.discriminator.score, "parametrizations")
    if spectral and f"{prefix}discriminator.score.weight" in state_dict:
        raise ValueError(
            "this cgan checkpoint predates the spectrally normalised discriminator and its matching terms; "
            "retrain it (model.preset=cgan)"
        )


def _match_loss(pairs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of "which of the batch's captions is this image's own" from the projections ``[B, B]``,
    over the rows holding both modalities (the other rows' captions are no candidates)."""
    keep = rows > 0
    logits = pairs.float().masked_fill(~keep[None, :], float("-inf"))
    target = torch.arange(len(rows), device=pairs.device)
    ce = F.cross_entropy(logits[keep], target[keep], reduction="sum") if keep.any() else pairs.sum() * 0.0
    return ce / keep.sum().clamp_min(1)


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def build_cgan(
    specs: Sequence[ModalitySpec],
    encoders: dict[str, nn.Module],
    *,
    dim: int,
    num_classes: int,
    shapes: Mapping[str, Sequence[int]],
    width: int,
) -> TextToImageGAN:
    """The ``cgan`` preset over ``specs`` (it needs image and text): the text encoder conditions the generator."""
    names = {s.name for s in specs}
    if not {IMAGE.name, TEXT.name} <= names:
        raise ValueError(f"preset 'cgan' needs modalities image and text, got {sorted(names)}")
    return TextToImageGAN(
        text_encoder=encoders[TEXT.name], dim=dim, num_classes=num_classes,
        image_size=shapes[IMAGE.column][-1], width=width,
    )  # fmt: skip

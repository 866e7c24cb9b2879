"""Train-time augmentation of model-ready torch batches: images are cropped, flipped, rotated and colour
jittered, audio features get a random gain and time shift; text is left as it is.

Build one ``Augmenter`` per worker from the ``train.augment`` settings (a plain dict) and wrap each epoch's
training batches; validation batches pass through ``augment_split`` untouched::

    augmenter = build_augmenter(settings, seed=0, rank=0, audio={"features": "log_mel", "n_mels": 64})
    for epoch in range(epochs):
        batches = augment_split(loader(epoch), augmenter, split="train", epoch=epoch)   # None: unchanged

A batch is the dict the trainer gets from ``iter_torch_batches`` (``mm_ray.columns``): ``image`` uint8
``[B, 3, S, S]``, ``audio`` float32 ``[B, rows, T]``, presence flags ``has_image``/``has_audio``. Rows whose
modality is missing keep their zeros. The randomness comes from one ``torch.Generator`` per epoch seeded
from ``(seed, rank, epoch)``: the same seed and the same input batches give the same augmented batches, and
a run resumed from a checkpoint draws what the first attempt would have drawn for that epoch.

The crop, flip and rotation are one affine warp per image (``affine_grid`` + ``grid_sample``, bilinear), so
each image is resampled once. Audio features are log-mels (natural log of power), so a gain of ``g`` dB is
the constant ``g / 10 * ln 10`` added to every band; for MFCCs that constant lands in ``c_0`` alone (scaled
by the DCT's row sum) and deltas do not move (``audio_gain_profile``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mm_ray.columns import AUDIO, HAS_AUDIO, HAS_IMAGE, IMAGE
from mm_ray.preprocess.mel import dct_matrix, feature_rows

# ITU-R BT.601 luma weights: the grey that saturation jitter pulls towards (what PIL's convert("L") uses).
_LUMA = (0.299, 0.587, 0.114)


class Augmenter:
    """Random per-sample augmentation of training batches; keyword arguments are ``AugmentConfig``'s fields.

    ``augmenter(batch, generator)`` augments one batch with draws from ``generator``; ``apply(batches,
    epoch)`` augments an epoch's batches with the generator of ``(seed, rank, epoch)``.
    ``gain_profile``: how a shift of every log-mel band by 1 shows in each audio feature row
    (``audio_gain_profile``); None = every row moves by 1 (log-mel features).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        rank: int = 0,
        crop_min_scale: float = 0.6,
        crop_max_aspect: float = 1.333,
        flip: float = 0.5,
        rotate_degrees: float = 10.0,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        gain_db: float = 6.0,
        time_shift: float = 0.1,
        gain_profile: np.ndarray | None = None,
    ):
        if not 0 < crop_min_scale <= 1 or crop_max_aspect < 1:
            raise ValueError(
                f"need 0 < crop_min_scale <= 1 and crop_max_aspect >= 1, got {crop_min_scale}, {crop_max_aspect}"
            )
        self.seed, self.rank = seed, rank
        self.crop_min_scale, self.crop_max_aspect = crop_min_scale, crop_max_aspect
        self.flip, self.rotate_degrees = flip, rotate_degrees
        self.jitter = (brightness, contrast, saturation)
        self.gain_db, self.time_shift = gain_db, time_shift
        self.gain_profile = (
            None if gain_profile is None else torch.as_tensor(gain_profile, dtype=torch.float32)
        )

    def generator(self, epoch: int) -> torch.Generator:
        """The epoch's generator: seeded from ``(seed, rank, epoch)`` through numpy's ``SeedSequence``, so
        nearby seeds, ranks and epochs still give unrelated streams."""
        state = np.random.SeedSequence([self.seed, self.rank, epoch]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def apply(self, batches: Iterable[Mapping[str, Any]], epoch: int) -> Iterator[dict[str, Any]]:
        """Augment one epoch's batches, lazily, in order."""
        generator = self.generator(epoch)
        for batch in batches:
            yield self(batch, generator)

    def __call__(self, batch: Mapping[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """A new batch dict with ``image`` and ``audio`` augmented (other columns are the same objects)."""
        out = dict(batch)
        if IMAGE in batch:
            out[IMAGE] = self._images(batch[IMAGE], batch.get(HAS_IMAGE), generator)
        if AUDIO in batch:
            out[AUDIO] = self._audio(batch[AUDIO], batch.get(HAS_AUDIO), generator)
        return out

    def _images(
        self, images: torch.Tensor, present: torch.Tensor | None, gen: torch.Generator
    ) -> torch.Tensor:
        n, max_log_aspect = images.shape[0], math.log(self.crop_max_aspect)
        # Every draw is made, in this order, even for ops that are off: the stream stays the same per seed.
        theta = crop_rotate_flip_theta(
            scale=_uniform(gen, n, self.crop_min_scale, 1.0),
            log_aspect=_uniform(gen, n, -max_log_aspect, max_log_aspect),
            offset=_uniform(gen, n, -1.0, 1.0, pairs=True),
            degrees=_uniform(gen, n, -self.rotate_degrees, self.rotate_degrees),
            mirror=_uniform(gen, n, 0.0, 1.0) < self.flip,
        )
        factors = [_uniform(gen, n, 1.0 - x, 1.0 + x) for x in self.jitter]
        warped = affine_warp(images.float(), theta.to(images.device))
        jittered = color_jitter(warped, *(f.to(images.device) for f in factors))
        augmented = jittered.round_().clamp_(0, 255).to(images.dtype)
        return _keep_missing(augmented, images, present)

    def _audio(self, audio: torch.Tensor, present: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        n, rows, frames = audio.shape
        gains = _uniform(gen, n, -self.gain_db, self.gain_db)
        limit = round(self.time_shift * frames)
        shifts = torch.randint(-limit, limit + 1, (n,), generator=gen)
        profile = torch.ones(rows) if self.gain_profile is None else self.gain_profile
        out = add_gain(audio, gains.to(audio.device), profile.to(audio.device))
        out = time_shift(out, shifts.to(audio.device))
        return _keep_missing(out, audio, present)


def build_augmenter(
    settings: Mapping[str, Any], *, seed: int, rank: int, audio: Mapping[str, Any] | None = None
) -> Augmenter | None:
    """The ``Augmenter`` of the ``train.augment`` settings (plain dict), or None when ``enabled`` is false.

    ``audio``: the audio preprocessing settings the batches were made with (``audio`` section of the config
    or cache manifest); they say how a gain shows in the features.
    """
    kwargs = dict(settings)
    if not kwargs.pop("enabled", False):
        return None
    kwargs.pop("at_decode", None)  # where the crop is drawn: decided by the caller (LoopConfig.for_run)
    audio = audio or {}
    # Caches from before MFCC support have no ``features`` key: they hold log-mels.
    features = audio.get("features", "log_mel")
    profile = None
    if features != "log_mel":
        profile = audio_gain_profile(features, audio["n_mels"], audio["n_mfcc"], audio["deltas"])
    return Augmenter(seed=seed, rank=rank, gain_profile=profile, **kwargs)


def augment_split(
    batches: Iterable[Mapping[str, Any]], augmenter: Augmenter | None, *, split: str, epoch: int
) -> Iterable[Mapping[str, Any]]:
    """``batches`` augmented when ``split`` is ``"train"`` and there is an augmenter; otherwise the very same
    iterable: validation must score the data as it is."""
    if augmenter is None or split != "train":
        return batches
    return augmenter.apply(batches, epoch)


def audio_gain_profile(features: str, n_mels: int, n_mfcc: int = 20, deltas: bool = True) -> np.ndarray:
    """How adding 1 to every log-mel band changes each feature row, float32 ``[rows]``: all ones for
    log-mel; for MFCCs the orthonormal DCT maps a constant onto its row sums (``sqrt(n_mels)`` for ``c_0``,
    ~0 for the others) and the deltas of a constant are 0."""
    rows = feature_rows(features, n_mels, n_mfcc, deltas)
    if features == "log_mel":
        return np.ones(rows, dtype=np.float32)
    profile = np.zeros(rows, dtype=np.float32)
    profile[:n_mfcc] = dct_matrix(n_mfcc, n_mels).sum(axis=1)
    return profile


def crop_rotate_flip_theta(
    *,
    scale: torch.Tensor,
    log_aspect: torch.Tensor,
    offset: torch.Tensor,
    degrees: torch.Tensor,
    mirror: torch.Tensor,
) -> torch.Tensor:
    """``affine_grid`` matrices ``[B, 2, 3]`` mapping output to input coordinates (both in ``[-1, 1]``).

    The crop has area ``scale`` and aspect ``exp(log_aspect)`` (sides capped at the whole image), its centre
    ``offset`` ``[B, 2]`` (x, y in ``[-1, 1]``) of the way to the edge it may reach; it is turned by
    ``degrees`` and mirrored left-right where ``mirror`` (bool ``[B]``). Scale 1, aspect 1, angle 0 and no
    mirror is the identity.
    """
    width = torch.sqrt(scale * log_aspect.exp()).clamp(max=1.0)
    height = torch.sqrt(scale / log_aspect.exp()).clamp(max=1.0)
    sign = torch.where(mirror, -1.0, 1.0)
    angle = torch.deg2rad(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    centre = offset * torch.stack([1.0 - width, 1.0 - height], dim=1)
    # input = centre + R(angle) @ diag(sign * width, height) @ output
    row_x = torch.stack([cos * width * sign, -sin * height, centre[:, 0]], dim=1)
    row_y = torch.stack([sin * width * sign, cos * height, centre[:, 1]], dim=1)
    return torch.stack([row_x, row_y], dim=1)


def affine_warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Float images ``[B, C, H, W]`` resampled (bilinear) through ``theta`` ``[B, 2, 3]``; same shape."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    # Reflection, not zeros: the corners a rotation uncovers would otherwise be black, a cue no real image has.
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(
    images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor
) -> torch.Tensor:
    """Float RGB images ``[B, 3, H, W]`` in ``[0, 255]`` scaled per image by the factors ``[B]``: brightness
    (all pixels), contrast (towards the image's mean grey), saturation (towards each pixel's grey). Not
    clamped."""
    luma = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    out = images * brightness.view(-1, 1, 1, 1)
    mean_grey = (out * luma).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    out = mean_grey + (out - mean_grey) * contrast.view(-1, 1, 1, 1)
    grey = (out * luma).sum(dim=1, keepdim=True)
    return grey + (out - grey) * saturation.view(-1, 1, 1, 1)


def add_gain(audio: torch.Tensor, gain_db: torch.Tensor, profile: torch.Tensor) -> torch.Tensor:
    """Log-power features ``[B, rows, T]`` of clips made ``gain_db`` ``[B]`` louder: ``ln(10^(g/10))`` times
    the row ``profile`` ``[rows]`` added (exact up to the ``1e-6`` floor inside the log)."""
    shift = gain_db * (math.log(10.0) / 10.0)
    return audio + shift.view(-1, 1, 1) * profile.view(1, -1, 1)


def time_shift(audio: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Features ``[B, rows, T]`` with each clip's frames rolled by ``shifts`` ``[B]`` (positive = later).

    A roll rather than padding: in log-power features there is no neutral fill value (zero is a loud 0 dB,
    the floor is digital silence), while a clip's own frames keep its level and noise.
    """
    frames = audio.shape[-1]
    source = (torch.arange(frames, device=audio.device).view(1, -1) - shifts.view(-1, 1)) % frames
    return torch.gather(audio, 2, source.unsqueeze(1).expand(-1, audio.shape[1], -1))


def _uniform(gen: torch.Generator, n: int, low: float, high: float, pairs: bool = False) -> torch.Tensor:
    shape = (n, 2) if pairs else (n,)
    return low + (high - low) * torch.rand(shape, generator=gen)


def _keep_missing(
    augmented: torch.Tensor, original: torch.Tensor, present: torch.Tensor | None
) -> torch.Tensor:
    if present is None:
        return augmented
    mask = present.to(torch.bool).view(-1, *([1] * (original.ndim - 1)))
    return torch.where(mask, augmented, original)

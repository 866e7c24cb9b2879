"""The tensor operations of train-time augmentation: an affine warp and colour jitter for images, a gain and a
time shift for log-power audio features. Each modality's spec draws its parameters and calls these
(``mm_ray.modalities.image`` / ``audio``); ``mm_ray.modalities.augment.Augmenter`` runs them over a batch.

The crop, flip and rotation are one affine warp per image (``affine_grid`` + ``grid_sample``, bilinear), so
each image is resampled once. Audio features are log-mels (natural log of power), so a gain of ``g`` dB is
the constant ``g / 10 * ln 10`` added to every band; for MFCCs that constant lands in ``c_0`` alone (scaled
by the DCT's row sum) and deltas do not move (``audio_gain_profile``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from mm_ray.preprocess.mel import dct_matrix, feature_rows

# ITU-R BT.601 luma weights: the grey that saturation jitter pulls towards (what PIL's convert("L") uses).
_LUMA = (0.299, 0.587, 0.114)


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


def uniform(gen: torch.Generator, n: int, low: float, high: float, pairs: bool = False) -> torch.Tensor:
    """``n`` (or ``[n, 2]`` with ``pairs``) draws from ``U[low, high)``."""
    shape = (n, 2) if pairs else (n,)
    return low + (high - low) * torch.rand(shape, generator=gen)


def keep_missing(
    augmented: torch.Tensor, original: torch.Tensor, present: torch.Tensor | None
) -> torch.Tensor:
    """``augmented`` where ``present`` (bool ``[B]``), ``original`` elsewhere: absent rows keep their zeros."""
    if present is None:
        return augmented
    mask = present.to(torch.bool).view(-1, *([1] * (original.ndim - 1)))
    return torch.where(mask, augmented, original)

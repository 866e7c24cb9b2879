"""Per-modality decoders: a latent vector ``[B, latent]`` back to one modality's model-ready shape.

    images = ImageDecoder(latent_dim=32, image_size=32, width=32)(z)      # float32 [B, 3, 32, 32] in [0, 1]
    mels = MelDecoder(latent_dim=32, n_mels=64, frames=101, width=32)(z)  # float32 [B, 64, 101], standardised

Images come out as pixels in ``[0, 1]`` (``x / 255`` of the uint8 column), so they are written as PNG as they
are. Log-mels come out standardised with fixed constants (``standardise_mel`` / ``unstandardise_mel``): raw
log-mel power spans about -14 (silence) to +5, so its squared error would drown the pixels' without this.
Pure PyTorch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MEL_CENTRE = -7.0
"""Subtracted from a log-mel (natural log of power; ``log(1e-6)`` = -13.8 is silence) before decoding."""
MEL_SCALE = 4.0
"""Then divided by this, so the values the decoder predicts sit around [-2, 3]."""


def standardise_mel(mels: torch.Tensor) -> torch.Tensor:
    """Log-mel features -> the scale ``MelDecoder`` predicts."""
    return (mels - MEL_CENTRE) / MEL_SCALE


def unstandardise_mel(values: torch.Tensor) -> torch.Tensor:
    """``MelDecoder`` output -> log-mel features (what the audio preprocessor computes)."""
    return values * MEL_SCALE + MEL_CENTRE


def _up2d(cin: int, cout: int) -> nn.Sequential:
    # kernel 4, stride 2, padding 1: exactly doubles the side, without the checkerboard of kernel 3.
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(1, cout), nn.GELU()
    )


class ImageDecoder(nn.Module):
    """A linear map to a ``[4w, s, s]`` grid (``s = ceil(image_size / 8)``), three transposed convolutions that
    each double the side, a 3-channel convolution and a sigmoid; resized to ``image_size`` when it is not a
    multiple of 8. ``in_dim`` is the latent size (plus a conditioning vector's, for a generator)."""

    def __init__(self, *, in_dim: int, image_size: int, width: int = 32):
        super().__init__()
        self.start = math.ceil(image_size / 8)
        self.channels = 4 * width
        self.image_size = image_size
        self.proj = nn.Linear(in_dim, self.channels * self.start**2)
        self.up = nn.Sequential(_up2d(4 * width, 2 * width), _up2d(2 * width, width), _up2d(width, width))
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim]`` -> float32 ``[B, 3, image_size, image_size]`` in ``[0, 1]``."""
        x = F.gelu(self.proj(z)).view(-1, self.channels, self.start, self.start)
        x = self.out(self.up(x))
        if x.shape[-1] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return torch.sigmoid(x)


class MelDecoder(nn.Module):
    """A linear map to ``[2w, t]`` (``t = ceil(frames / 4)``), two transposed 1-D convolutions that each double
    the time axis, and a convolution to ``n_mels`` channels; cut or stretched to ``frames``. The output is a
    standardised log-mel (``unstandardise_mel`` gives the features back)."""

    def __init__(self, *, in_dim: int, n_mels: int, frames: int, width: int = 32):
        super().__init__()
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.start = math.ceil(frames / 4)
        self.channels = 2 * width
        self.frames = frames
        self.proj = nn.Linear(in_dim, self.channels * self.start)
        self.up = nn.Sequential(
            nn.ConvTranspose1d(2 * width, 2 * width, 4, stride=2, padding=1),
            nn.GroupNorm(1, 2 * width),
            nn.GELU(),
            nn.ConvTranspose1d(2 * width, width, 4, stride=2, padding=1),
            nn.GroupNorm(1, width),
            nn.GELU(),
        )
        self.out = nn.Conv1d(width, n_mels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim]`` -> float32 ``[B, n_mels, frames]`` (standardised log-mel)."""
        x = F.gelu(self.proj(z)).view(-1, self.channels, self.start)
        x = self.out(self.up(x))
        if x.shape[-1] != self.frames:
            x = F.interpolate(x, size=self.frames, mode="linear", align_corners=False)
        return x

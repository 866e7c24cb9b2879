"""Images decoded and resized on a torch device: nvJPEG on a CUDA GPU (``torchvision.io.decode_jpeg``, batched),
with a CPU fallback whose output is the same computation.

    decoder = DeviceImageDecoder(size=224, device="cuda")   # needs torchvision (the `pretrained` extra)
    images, ok = decoder([jpeg_bytes, png_bytes, b"junk"])  # uint8 [3, 3, 224, 224] on the device; ok [T, T, F]
    DeviceImageDecoder(size=224, device="cpu")               # the fallback: Pillow decodes, torch resizes

Both paths run the same geometry as ``ImagePreprocessor(resize="crop")``: the centre square of the full-size
picture, resized to ``size`` with an antialiased bilinear filter (``torch.nn.functional.interpolate(...,
antialias=True)``), rounded to uint8. Only the decode differs: nvJPEG's IDCT against libjpeg's, a level or two
on a few pixels; after it every step is the same torch code on either device. JPEGs go to nvJPEG in one
batched call; other formats (PNG, WebP, ...) and JPEGs nvJPEG refuses are decoded by Pillow on the CPU and
moved to the device. A sample no decoder reads comes back all zeros with ``ok`` False (the pools' quarantine
ledger is not consulted here: call it where the pipeline's CPU decoder already rejected nothing).

Status: a decode kernel with its tests and its measurement (``cluster/gpu_check.sh``), not yet an option of
the pools or of the Train worker's batches. Pure torch + Pillow; torchvision only for the CUDA path.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from mm_ray.modalities.image_decode import DEFAULT_MAX_PIXELS, to_rgb

JPEG_MAGIC = b"\xff\xd8\xff"


def centre_square(image: torch.Tensor) -> torch.Tensor:
    """The centre square (side = the shorter side) of a ``[3, H, W]`` image, as ``ImagePreprocessor``'s crop."""
    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[:, top : top + side, left : left + side]


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[3, S, S]`` -> uint8 ``[3, size, size]``: antialiased bilinear, rounded, on ``image``'s device."""
    if image.shape[-1] == size:
        return image
    x = image[None].to(torch.float32)
    y = torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return y[0].round_().clamp_(0, 255).to(torch.uint8)


def pil_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Full-size uint8 ``[3, H, W]`` decoded by Pillow (any format it reads); raises on a bad image."""
    im = Image.open(io.BytesIO(data))
    if im.size[0] * im.size[1] > max_pixels:
        raise ValueError(f"decompression bomb: {im.size[0]}x{im.size[1]} pixels")
    im.load()
    return torch.from_numpy(np.asarray(to_rgb(im)).transpose(2, 0, 1).copy())


class DeviceImageDecoder:
    """Encoded images -> uint8 ``[N, 3, size, size]`` on ``device`` (module docstring)."""

    def __init__(
        self, size: int = 224, device: str | torch.device = "cpu", max_pixels: int = DEFAULT_MAX_PIXELS
    ):
        self.size = size
        self.device = torch.device(device)
        self.max_pixels = max_pixels
        self._decode_jpeg = _nvjpeg() if self.device.type == "cuda" else None

    def __call__(self, datas: Sequence[bytes | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, ok)``: the decoded batch and which samples decoded (the others are zeros)."""
        out = torch.zeros((len(datas), 3, self.size, self.size), dtype=torch.uint8, device=self.device)
        ok = torch.zeros(len(datas), dtype=torch.bool)
        decoded = self._on_device(datas)
        for i, data in enumerate(datas):
            image = decoded.get(i)
            if image is None and data:
                try:
                    image = pil_rgb(data, self.max_pixels).to(self.device, non_blocking=True)
                except Exception:  # Pillow raises OSError, SyntaxError, ValueError, ...: the sample is bad
                    continue
            if image is not None:
                out[i] = resize_square(centre_square(image), self.size)
                ok[i] = True
        return out, ok

    def _on_device(self, datas: Sequence[bytes | None]) -> dict[int, torch.Tensor]:
        """The JPEGs decoded by nvJPEG in one call (CUDA only); those it refuses are left to Pillow."""
        if self._decode_jpeg is None:
            return {}
        jpegs = [i for i, d in enumerate(datas) if d and d[:3] == JPEG_MAGIC]
        if not jpegs:
            return {}
        encoded = [torch.frombuffer(bytearray(datas[i]), dtype=torch.uint8) for i in jpegs]
        try:
            images = self._decode_jpeg(encoded, device=self.device)
        except RuntimeError:
            return {}  # one bad JPEG fails the batched call: Pillow sorts the good from the bad
        return {i: img for i, img in zip(jpegs, images, strict=True) if img.shape[0] == 3}


def _nvjpeg():
    """``torchvision.io.decode_jpeg`` with RGB output; ``ConfigError`` naming the extra when torchvision is absent."""
    from mm_ray.libraries import torchvision_models

    torchvision_models(
        "image decode on the GPU"
    )  # a ConfigError naming the pretrained extra when it is absent
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(encoded, device):
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)

    return decode

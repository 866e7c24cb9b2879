"""Images decoded and resized by torch (``mm_ray.modalities.image_device``): the CPU fallback against the pools'
Pillow decoder (an independent resize), and on a GPU nvJPEG against the CPU fallback."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mm_ray.modalities.image_decode import ImagePreprocessor
from mm_ray.modalities.image_device import DeviceImageDecoder, centre_square, resize_square

SIZE = 48


def _photo(width: int, height: int, seed: int) -> np.ndarray:
    """Smooth colour gradients with a few soft blobs: JPEG-friendly content whose resize is well defined."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, 60)
        blob = 120 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        channels.append(60 + 80 * x / width + 40 * y / height + blob)
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    sizes = [(200, 120), (96, 160), (48, 48), (333, 251)]
    return [_encoded(_photo(w, h, i), "JPEG" if i % 2 == 0 else "PNG") for i, (w, h) in enumerate(sizes)]


def test_cpu_fallback_matches_the_pools_pillow_decoder(images: list[bytes]) -> None:
    torch_out, ok = DeviceImageDecoder(size=SIZE, device="cpu")(images)
    assert ok.all() and torch_out.shape == (len(images), 3, SIZE, SIZE) and torch_out.dtype == torch.uint8
    pillow = ImagePreprocessor(size=SIZE, resize="crop", use_draft=False)
    for i, data in enumerate(images):
        expected = pillow.decode(data).astype(np.int16)
        diff = np.abs(torch_out[i].numpy().astype(np.int16) - expected)
        # Two antialiased bilinear resizes of the same pixels (Pillow's with a box pre-reduction): close.
        assert diff.mean() < 0.6 and np.percentile(diff, 99) <= 4, f"image {i}: mean {diff.mean():.2f}"


def test_resize_is_a_plain_crop_when_the_size_already_fits() -> None:
    square = torch.arange(3 * 6 * 10, dtype=torch.int64).reshape(3, 6, 10).to(torch.uint8)
    assert torch.equal(centre_square(square), square[:, :, 2:8])
    assert torch.equal(resize_square(centre_square(square), 6), square[:, :, 2:8])
    flat = torch.full((3, 40, 40), 77, dtype=torch.uint8)
    assert (resize_square(flat, 13) == 77).all(), "a flat picture stays flat through the filter"


def test_a_bad_sample_is_zeros_and_not_ok(images: list[bytes]) -> None:
    batch = [images[0], b"\xff\xd8\xff not a jpeg", None, images[1]]
    out, ok = DeviceImageDecoder(size=SIZE, device="cpu")(batch)
    assert ok.tolist() == [True, False, False, True]
    assert not out[1].any() and not out[2].any() and out[0].any()


@pytest.mark.gpu
def test_nvjpeg_on_the_gpu_matches_the_cpu_fallback(images: list[bytes]) -> None:
    gpu, gpu_ok = DeviceImageDecoder(size=SIZE, device="cuda")(images)
    cpu, cpu_ok = DeviceImageDecoder(size=SIZE, device="cpu")(images)
    assert gpu.device.type == "cuda" and gpu_ok.all() and cpu_ok.all()
    diff = (gpu.cpu().to(torch.int16) - cpu.to(torch.int16)).abs()
    # Only the JPEG decode differs (nvJPEG's IDCT against libjpeg's); PNGs take the same path on both.
    assert diff.float().mean() < 1.0 and diff.max() <= 12

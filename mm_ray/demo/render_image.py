"""Render a (topic colour, shape) pair as an encoded image.

The background is the topic's palette colour (small jitter); one large shape (35-70 % of the short side) sits
at a random place inside the *centred square* of the image, so it survives both a squashing resize to 64x64
and a short-side resize + centre crop. Shapes are never rotated (a rotated square is a diamond) and are painted
in a low-saturation dark or light grey, never a palette colour, so the background colour stays the only colour
cue. Mild Gaussian noise comes from a per-shard noise bank (cropping a random window of it is ~3x cheaper than
drawing fresh noise per image and just as deterministic).

Usage::

    rng = np.random.default_rng(0)
    bank = make_noise_bank(rng, max_side=512)
    data = render_image(rng, color=2, shape=1, size=(320, 480), container="jpg", noise_bank=bank)
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

PALETTE = (
    ("red", (200, 40, 40)),
    ("green", (40, 150, 60)),
    ("blue", (40, 70, 200)),
    ("orange", (235, 150, 20)),
    ("purple", (140, 50, 170)),
    ("teal", (20, 160, 165)),
    ("yellow", (225, 205, 40)),
    ("pink", (235, 110, 175)),
)
"""Background colour of each topic symbol (name, RGB); pairwise far apart so jitter + JPEG keep them apart."""

SHAPES = ("circle", "square", "triangle", "cross", "star", "diamond", "ring", "hourglass")
COLOR_JITTER = 12  # per channel, +-; palette colours differ by >= 55 on some channel
SHAPE_FRACTION = (0.35, 0.70)  # shape side as a fraction of the image's short side
NOISE_SIGMA = 5.0


def make_noise_bank(rng: np.random.Generator, *, max_side: int, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """Gaussian noise, int16 [2 * max_side, 2 * max_side, 3], to crop per image."""
    return np.rint(rng.normal(0.0, sigma, size=(2 * max_side, 2 * max_side, 3))).astype(np.int16)


def _shape_polygon(name: str, x0: float, y0: float, s: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape in the box (x0, y0, side s)."""
    cx, cy = x0 + s / 2, y0 + s / 2
    if name == "triangle":
        return [(cx, y0), (x0 + s, y0 + s), (x0, y0 + s)]
    if name == "diamond":
        return [(cx, y0), (x0 + s, cy), (cx, y0 + s), (x0, cy)]
    if name == "hourglass":
        return [(x0, y0), (x0 + s, y0), (cx, cy), (x0 + s, y0 + s), (x0, y0 + s), (cx, cy)]
    if name == "star":
        pts = []
        for i in range(10):
            radius = s / 2 if i % 2 == 0 else s / 5
            angle = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return pts
    if name == "cross":
        a, b = x0 + s / 3, x0 + 2 * s / 3
        c, d = y0 + s / 3, y0 + 2 * s / 3
        return [(a, y0), (b, y0), (b, c), (x0 + s, c), (x0 + s, d), (b, d), (b, y0 + s), (a, y0 + s), (a, d),
                (x0, d), (x0, c), (a, c)]  # fmt: skip
    raise ValueError(f"unknown shape {name!r}")


def draw_shape(
    draw: ImageDraw.ImageDraw, name: str, box: tuple[float, float, float], fill, background
) -> None:
    """Paint shape ``name`` into the square box (x0, y0, side)."""
    x0, y0, s = box
    if name == "circle":
        draw.ellipse((x0, y0, x0 + s, y0 + s), fill=fill)
    elif name == "square":
        draw.rectangle((x0, y0, x0 + s, y0 + s), fill=fill)
    elif name == "ring":
        # the hole is half the diameter: wide enough to stay open at 64 px, unlike a thin outline
        draw.ellipse((x0, y0, x0 + s, y0 + s), fill=fill)
        draw.ellipse((x0 + s / 4, y0 + s / 4, x0 + 3 * s / 4, y0 + 3 * s / 4), fill=background)
    else:
        draw.polygon(_shape_polygon(name, x0, y0, s), fill=fill)


def _contrast_grey(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A dark or light low-saturation grey, whichever contrasts with the background's luminance."""
    luminance = float(background @ np.array([0.299, 0.587, 0.114]))
    level = rng.integers(10, 60) if luminance > 130 else rng.integers(200, 246)
    tint = rng.integers(-10, 11, size=3)
    return tuple(int(v) for v in np.clip(level + tint, 0, 255))


def render_image(
    rng: np.random.Generator,
    *,
    color: int,
    shape: int,
    size: tuple[int, int],
    container: str = "jpg",
    noise_bank: np.ndarray | None = None,
) -> bytes:
    """Draw background ``PALETTE[color]`` with ``SHAPES[shape]``; ``size`` is (width, height).

    ``container`` is "jpg" (quality drawn in 85..92) or "png". Without a ``noise_bank`` no noise is added.
    """
    width, height = size
    background = np.clip(
        np.array(PALETTE[color][1]) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255
    )
    image = Image.new("RGB", (width, height), tuple(int(v) for v in background))
    short = min(width, height)
    side = int(short * rng.uniform(*SHAPE_FRACTION))
    # place the shape inside the centred short-side square, so a centre crop cannot cut it off
    x0 = (width - short) // 2 + int(rng.integers(0, short - side + 1))
    y0 = (height - short) // 2 + int(rng.integers(0, short - side + 1))
    fill = _contrast_grey(rng, background)
    draw_shape(ImageDraw.Draw(image), SHAPES[shape], (x0, y0, side), fill, tuple(int(v) for v in background))
    if noise_bank is not None:
        oy = int(rng.integers(0, noise_bank.shape[0] - height + 1))
        ox = int(rng.integers(0, noise_bank.shape[1] - width + 1))
        pixels = np.asarray(image, dtype=np.int16) + noise_bank[oy : oy + height, ox : ox + width]
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    if container == "jpg":
        image.save(out, format="JPEG", quality=int(rng.integers(85, 93)))
    elif container == "png":
        # level 1: noisy pixels barely compress anyway, and level 6 is ~2x slower for ~10 % smaller files
        image.save(out, format="PNG", compress_level=1)
    else:
        raise ValueError(f"container must be 'jpg' or 'png', got {container!r}")
    return out.getvalue()

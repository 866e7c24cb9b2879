"""Image preprocessing: encoded bytes (JPEG, PNG, WebP, ...) -> uint8 CHW arrays of one fixed size.

Use it as a callable class on numpy batches (a Ray Data actor pool calls it the same way)::

    pre = ImagePreprocessor(size=224, resize="crop")
    batch = pre({"image_bytes": np.array([jpeg_bytes, None], dtype=object)})
    batch["image"]      # uint8 [2, 3, 224, 224]; row 1 is all zeros
    batch["has_image"]  # [True, False]

or on one sample: ``pre.decode(jpeg_bytes)`` returns uint8 [3, 224, 224] and raises
``SampleError(Reason.CORRUPT_IMAGE, ...)`` on a bad image.

Decoding choices (all for throughput, with the quality cost stated):

* JPEGs are decoded with ``Image.draft``: libjpeg scales by 1/2, 1/4 or 1/8 inside the DCT, so a
  2000 px photo never exists at full size. The scale is chosen so the decoded image is still at
  least as large as the resize target; quality loss is negligible next to the resize itself.
* Resampling is bilinear with ``reducing_gap=3.0``: Pillow first box-reduces by an integer factor,
  then resamples. Pillow's bilinear filter widens with the scale factor (it antialiases), and a gap
  of 3 is documented by Pillow as indistinguishable from a full-width filter.
* The centre crop is folded into the resize (``box=``), so no intermediate image is made.
* Any mode becomes RGB: 16-bit and 32-bit integer images are scaled (not clipped) to 8 bits,
  float images are min-max stretched, transparency is composited on white. EXIF orientation is
  not applied (images are used as stored).

Images stay uint8 on the way to the trainer (4x less data than float32); ``normalize_images``
turns them into normalized float32 on the training device.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from mm_ray.columns import REJECT, REJECT_DETAIL
from mm_ray.modalities.spec import presence_column, raw_column
from mm_ray.preprocess.batch import decode_rows, reject_columns
from mm_ray.quarantine import Reason, SampleError

NAME = "image"
IMAGE = NAME
"""The model-ready column: uint8 ``[3, size, size]``."""
IMAGE_BYTES, HAS_IMAGE = raw_column(NAME), presence_column(NAME)

if TYPE_CHECKING:
    import torch

ResizeMode = Literal["crop", "stretch", "pad"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Transparent pixels are shown on white: most transparent images (logos, icons, line art) are
# drawn for a light page, and black strokes composited on black would vanish.
ALPHA_BACKGROUND = (255, 255, 255)

# Pillow's own warning threshold (~89.5 MP, about 256 MiB as RGB). Pillow refuses images over
# twice its threshold by itself, whatever max_pixels says.
DEFAULT_MAX_PIXELS = 89_478_485

REDUCING_GAP = 3.0
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})  # not "LAB": its "A" is a colour axis
_RESAMPLE = Image.Resampling.BILINEAR


def formats_for(extensions: Sequence[str]) -> tuple[str, ...]:
    """The Pillow formats that ``extensions`` (``data.members.image``) name; unknown extensions name none."""
    Image.init()
    known = Image.registered_extensions()
    return tuple(
        sorted(
            {known[f".{e.lower().lstrip('.')}"] for e in extensions if f".{e.lower().lstrip('.')}" in known}
        )
    )


class ImagePreprocessor:
    """Decode, convert to RGB and resize images to uint8 ``[3, size, size]``.

    Args:
        size: output height and width in pixels.
        resize: ``"crop"`` scales the shorter side to ``size`` and keeps the centre square;
            ``"stretch"`` scales both sides to ``size`` (aspect ratio not kept); ``"pad"`` scales
            the longer side to ``size`` and centres the image on zeros (letterbox).
        max_pixels: images with more pixels (width x height, read from the header before
            decoding) are rejected as decompression bombs.
        use_draft: decode JPEGs at reduced scale (see the module docstring); off only to compare.
        formats: the only Pillow formats tried (``formats_for(data.members.image)`` in the pipeline): bytes
            of any other format (a TIFF, PSD or EPS named ``.jpg``) are ``CORRUPT_IMAGE``, never handed
            to that format's decoder. None tries every format Pillow knows.
        random_crop: ``(min_scale, max_aspect)`` for a random resized crop drawn per image while decoding (a
            training augmentation: ``crop_box``), cut from the full-resolution source and resized to ``size``
            (``crop``/``stretch`` fill the frame, ``pad`` letterboxes the crop); None keeps ``resize``'s
            fixed region.
        seed: seed of the crops' random generator; None draws it from the OS, so an actor pool that is made
            anew every epoch draws new crops every epoch.
    """

    def __init__(
        self,
        size: int = 224,
        resize: ResizeMode = "crop",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        use_draft: bool = True,
        formats: Sequence[str] | None = None,
        random_crop: tuple[float, float] | None = None,
        seed: int | None = None,
    ):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if resize not in ("crop", "stretch", "pad"):
            raise ValueError(f"resize must be 'crop', 'stretch' or 'pad', got {resize!r}")
        if random_crop is not None:
            min_scale, max_aspect = random_crop
            if not 0 < min_scale <= 1 or max_aspect < 1:
                raise ValueError(
                    f"random_crop: need 0 < min_scale <= 1 and max_aspect >= 1, got {random_crop}"
                )
        self.random_crop = tuple(random_crop) if random_crop is not None else None
        self._rng = np.random.default_rng(seed)
        self.size = size
        self.resize = resize
        self.max_pixels = max_pixels
        self.use_draft = use_draft
        self.formats = tuple(formats) if formats is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replace ``image_bytes`` with ``image`` (uint8 [N, 3, size, size]) and ``has_image``."""
        raw = batch.pop(IMAGE_BYTES)
        n = len(raw)
        reject, detail = reject_columns(batch, n)
        images = np.zeros((n, 3, self.size, self.size), dtype=np.uint8)
        has = decode_rows(raw, reject, detail, lambda i, data: self._decode_into(data, images[i]))
        batch[IMAGE] = images
        batch[HAS_IMAGE] = has
        batch[REJECT] = reject
        batch[REJECT_DETAIL] = detail
        return batch

    def decode(self, data: bytes) -> np.ndarray:
        """One encoded image -> uint8 ``[3, size, size]``; raises ``SampleError(CORRUPT_IMAGE)``."""
        out = np.zeros((3, self.size, self.size), dtype=np.uint8)
        self._decode_into(data, out)
        return out

    def _decode_into(self, data: bytes, out: np.ndarray) -> None:
        try:
            rgb = self._open_resized(data)
        except SampleError:
            raise
        except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
            raise SampleError(Reason.CORRUPT_IMAGE, f"{type(err).__name__}: {err}") from None
        # Written only after a full decode, so a failing sample leaves its row all zeros.
        pixels = np.asarray(rgb).transpose(2, 0, 1)
        top = (self.size - pixels.shape[1]) // 2
        left = (self.size - pixels.shape[2]) // 2
        out[:, top : top + pixels.shape[1], left : left + pixels.shape[2]] = pixels

    def _open_resized(self, data: bytes) -> Image.Image:
        im = Image.open(io.BytesIO(data), formats=self.formats)
        width, height = im.size
        if width * height > self.max_pixels:
            raise SampleError(
                Reason.CORRUPT_IMAGE, f"decompression bomb: {width}x{height} > {self.max_pixels} pixels"
            )
        box = self._source_box(width, height)
        out_w, out_h = self._output_size(round(box[2] - box[0]), round(box[3] - box[1]))
        if self.use_draft and im.format == "JPEG":
            # Request the size the source box must keep so the draft never goes below the target.
            need_w = math.ceil(out_w * width / (box[2] - box[0]))
            need_h = math.ceil(out_h * height / (box[3] - box[1]))
            drafted = im.draft("RGB", (need_w, need_h))
            if drafted is not None:
                factor = drafted[1][2] / width
                box = tuple(v * factor for v in box)
        im.load()  # full decode now, so truncated files fail here rather than pass half-grey
        rgb = to_rgb(im)
        if rgb.size == (out_w, out_h) and box == (0, 0, *rgb.size):
            return rgb
        return rgb.resize((out_w, out_h), _RESAMPLE, box=box, reducing_gap=REDUCING_GAP)

    def _output_size(self, width: int, height: int) -> tuple[int, int]:
        """Size of the resized picture before it is placed in the ``size x size`` frame."""
        if self.resize != "pad":
            return self.size, self.size
        scale = self.size / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def _source_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region of the source image that is resized into the output."""
        if self.random_crop is not None:
            return crop_box(width, height, *self.random_crop, self._rng)
        if self.resize != "crop":
            return (0, 0, width, height)
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        return (left, top, left + side, top + side)


def crop_box(
    width: int, height: int, min_scale: float, max_aspect: float, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """A random resized crop's source region ``(left, top, right, bottom)``, the way torchvision's
    ``RandomResizedCrop`` draws it: area a uniform fraction in ``[min_scale, 1]`` of the image, aspect ratio
    (width / height) log-uniform in ``[1/max_aspect, max_aspect]``, position uniform; up to 10 draws until the
    box fits, else the largest centred box of the nearest allowed aspect."""
    area = width * height
    log_aspect = math.log(max_aspect)
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(-log_aspect, log_aspect))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
            return (left, top, left + w, top + h)
    aspect = min(max(width / height, 1 / max_aspect), max_aspect)
    w, h = (width, width / aspect) if width / height < aspect else (height * aspect, height)
    left, top = (width - w) / 2, (height - h) / 2
    return (left, top, left + w, top + h)


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB (see the module docstring)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode == "I":
        # Pillow's own conversion clips to 0..255; scale the 16-bit range down instead. Mode "I"
        # is how some Pillow versions and TIFF files present 16-bit grayscale.
        values = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        # Float images have no standard range (0..1 and 0..255 are both common): stretch min-max.
        values = np.asarray(im, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        gray = np.clip(np.rint((values - low) * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", im.size, ALPHA_BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def normalize_images(
    images: torch.Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` (or ``[3, H, W]``) -> float32 ``(x / 255 - mean) / std``.

    Call it on the training device, after the batch has been moved there: the data stream stays
    uint8 (4x fewer bytes through the object store and host-to-device copies) and the GPU does
    the arithmetic almost for free.
    """
    # Imported here so that preprocessing workers, which never call this, skip torch's import cost.
    import torch

    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(-1, 1, 1)
    return images.to(torch.float32).div_(255.0).sub_(mean_t).div_(std_t)

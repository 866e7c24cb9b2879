"""ImagePreprocessor on real encoded images (JPEG, PNG, WebP, TIFF) built in memory."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mm_ray.columns import REJECT, REJECT_DETAIL
from mm_ray.modalities.image_decode import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor, normalize_images
from mm_ray.quarantine import Reason, SampleError

HAS_IMAGE = "has_image"
IMAGE = "image"
IMAGE_BYTES = "image_bytes"

COLOR = (200, 40, 90)


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def solid(mode: str, value, size=(64, 48)) -> Image.Image:
    return Image.new(mode, size, value)


def transparent_palette() -> bytes:
    """Palette PNG whose colour 0 is fully transparent (tRNS chunk)."""
    im = Image.new("P", (64, 48), 0)
    im.putpalette([*COLOR, 0, 0, 0])
    return encode(im, "PNG", transparency=0)


def smooth_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like image: low-frequency colour noise upsampled (JPEG-friendly, not flat)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def thirds(width: int, height: int) -> Image.Image:
    """Red / green / blue thirds along the longer side."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    if width >= height:
        third = width // 3
        arr[:, :third, 0] = arr[:, third : 2 * third, 1] = arr[:, 2 * third :, 2] = 255
    else:
        third = height // 3
        arr[:third, :, 0] = arr[third : 2 * third, :, 1] = arr[2 * third :, :, 2] = 255
    return Image.fromarray(arr)


def assert_filled_with(image: np.ndarray, rgb, atol: int) -> None:
    assert image.shape[0] == 3
    expected = np.array(rgb, dtype=np.int16)[:, None, None]
    assert np.abs(image.astype(np.int16) - expected).max() <= atol


@pytest.mark.parametrize(
    ("payload", "expected", "atol"),
    [
        pytest.param(encode(solid("RGB", COLOR), "JPEG", quality=95), COLOR, 4, id="jpeg"),
        pytest.param(encode(solid("RGB", COLOR), "PNG"), COLOR, 0, id="png"),
        pytest.param(encode(solid("RGB", COLOR), "WEBP", lossless=True), COLOR, 0, id="webp"),
        pytest.param(encode(solid("L", 100), "PNG"), (100, 100, 100), 0, id="gray-L"),
        pytest.param(encode(solid("L", 100), "JPEG"), (100, 100, 100), 2, id="gray-jpeg"),
        pytest.param(encode(solid("RGB", COLOR).quantize(colors=4), "PNG"), COLOR, 0, id="palette-P"),
        pytest.param(transparent_palette(), (255, 255, 255), 0, id="palette-transparent"),
        pytest.param(
            encode(solid("RGB", (255, 0, 0)).convert("CMYK"), "JPEG"), (255, 0, 0), 4, id="cmyk-jpeg"
        ),
        pytest.param(encode(solid("RGBA", (*COLOR, 255)), "PNG"), COLOR, 0, id="opaque-rgba"),
        pytest.param(encode(solid("RGBA", (0, 0, 0, 0)), "PNG"), (255, 255, 255), 0, id="transparent-rgba"),
        pytest.param(encode(solid("LA", (0, 128)), "PNG"), (127, 127, 127), 1, id="half-alpha-LA"),
        pytest.param(encode(solid("I;16", 32768), "PNG"), (128, 128, 128), 0, id="png16-mid"),
        pytest.param(encode(solid("I;16", 65535), "PNG"), (255, 255, 255), 0, id="png16-max"),
        pytest.param(encode(solid("I;16", 1028), "PNG"), (4, 4, 4), 0, id="png16-low"),
        pytest.param(encode(solid("I", 32768), "TIFF"), (128, 128, 128), 0, id="tiff-I"),
    ],
)
def test_any_mode_decodes_to_rgb(payload: bytes, expected, atol: int):
    out = ImagePreprocessor(size=32).decode(payload)
    assert out.dtype == np.uint8 and out.shape == (3, 32, 32)
    assert_filled_with(out, expected, atol)


def test_sixteen_bit_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 256, dtype=np.float64).round().astype(np.uint16)
    payload = encode(Image.fromarray(np.tile(ramp, (256, 1))), "PNG")
    row = ImagePreprocessor(size=256, resize="stretch").decode(payload)[0, 128]
    np.testing.assert_allclose(row, np.arange(256), atol=1)


def test_float_image_is_stretched_min_to_max():
    values = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (64, 1))
    out = ImagePreprocessor(size=64, resize="stretch").decode(encode(Image.fromarray(values), "TIFF"))
    assert out[0, 0, 0] == 0 and out[0, 0, -1] == 255


def test_crop_keeps_the_centre():
    for image in (thirds(300, 100), thirds(100, 300)):
        out = ImagePreprocessor(size=30, resize="crop").decode(encode(image, "PNG"))
        # The crop box is exactly the green third; skip a 1-px rim the bilinear filter may blend.
        assert_filled_with(out[:, 1:-1, 1:-1], (0, 255, 0), 0)


def test_stretch_keeps_everything():
    out = ImagePreprocessor(size=30, resize="stretch").decode(encode(thirds(300, 100), "PNG"))
    assert tuple(out[:, 15, 4]) == (255, 0, 0)
    assert tuple(out[:, 15, 15]) == (0, 255, 0)
    assert tuple(out[:, 15, 25]) == (0, 0, 255)
    out = ImagePreprocessor(size=30, resize="stretch").decode(encode(thirds(100, 300), "PNG"))
    assert tuple(out[:, 4, 15]) == (255, 0, 0) and tuple(out[:, 25, 15]) == (0, 0, 255)


def test_pad_letterboxes_with_zeros():
    wide = ImagePreprocessor(size=30, resize="pad").decode(encode(thirds(300, 100), "PNG"))
    assert not wide[:, :10].any() and not wide[:, 20:].any()  # 300x100 -> 30x10, centred
    assert tuple(wide[:, 15, 4]) == (255, 0, 0) and tuple(wide[:, 15, 25]) == (0, 0, 255)
    tall = ImagePreprocessor(size=30, resize="pad").decode(encode(thirds(100, 300), "PNG"))
    assert not tall[:, :, :10].any() and not tall[:, :, 20:].any()
    assert tuple(tall[:, 4, 15]) == (255, 0, 0) and tuple(tall[:, 25, 15]) == (0, 0, 255)


@pytest.mark.parametrize("resize", ["crop", "stretch", "pad"])
def test_jpeg_draft_matches_full_decode(resize: str):
    payload = encode(smooth_photo(1600, 1000), "JPEG", quality=92)
    drafted = ImagePreprocessor(size=96, resize=resize).decode(payload)
    full = ImagePreprocessor(size=96, resize=resize, use_draft=False).decode(payload)
    assert drafted.shape == full.shape == (3, 96, 96)
    assert np.abs(drafted.astype(np.int16) - full).mean() < 3.0


def test_draft_never_decodes_below_the_target():
    # 1000x1000 at size 400 may only be drafted by 2 (500 px), never by 4 (250 px).
    payload = encode(smooth_photo(1000, 1000), "JPEG", quality=92)
    im = Image.open(io.BytesIO(payload))
    pre = ImagePreprocessor(size=400)
    drafted = pre.decode(payload)
    im.draft("RGB", (250, 250))  # what an over-eager draft would give
    too_small = np.asarray(im.convert("RGB").resize((400, 400), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    full = ImagePreprocessor(size=400, use_draft=False).decode(payload)
    assert np.abs(drafted.astype(np.int16) - full).mean() < np.abs(too_small.astype(np.int16) - full).mean()


def corrupt_payloads() -> dict[str, bytes]:
    jpeg = encode(smooth_photo(256, 256), "JPEG")
    png = encode(smooth_photo(256, 256), "PNG")
    rng = np.random.default_rng(1)
    return {
        "truncated-jpeg": jpeg[: len(jpeg) // 2],
        "truncated-png": png[: len(png) // 2],
        "random-bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty": b"",
    }


@pytest.mark.parametrize("name", list(corrupt_payloads()))
def test_corrupt_image_raises_sample_error(name: str):
    with pytest.raises(SampleError) as info:
        ImagePreprocessor(size=32).decode(corrupt_payloads()[name])
    assert info.value.reason is Reason.CORRUPT_IMAGE
    assert info.value.detail


def test_decompression_bomb_is_rejected_before_decoding():
    with pytest.raises(SampleError) as info:
        ImagePreprocessor(size=32, max_pixels=64 * 64 - 1).decode(
            encode(solid("RGB", COLOR, (64, 64)), "PNG")
        )
    assert info.value.reason is Reason.CORRUPT_IMAGE and "bomb" in info.value.detail


def test_bad_rows_are_rejected_and_good_rows_kept():
    good = encode(solid("RGB", COLOR), "PNG")
    bad = list(corrupt_payloads().values())
    raw = np.array([good, *bad, None, good], dtype=object)
    out = ImagePreprocessor(size=32)({IMAGE_BYTES: raw})
    n = len(raw)
    assert out[IMAGE].shape == (n, 3, 32, 32) and out[IMAGE].dtype == np.uint8
    assert list(out[REJECT]) == ["", *[Reason.CORRUPT_IMAGE.value] * len(bad), "", ""]
    assert all(out[REJECT_DETAIL][1 : 1 + len(bad)])
    assert list(out[HAS_IMAGE]) == [True, *[False] * len(bad), False, True]
    assert not out[IMAGE][1:-1].any()  # rejected and missing rows are all zeros
    for row in (0, n - 1):
        assert_filled_with(out[IMAGE][row], COLOR, 0)


def test_normalize_images_uses_imagenet_statistics():
    images = torch.zeros((2, 3, 4, 4), dtype=torch.uint8)
    images[1] = 255
    out = normalize_images(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 0, 0], -mean / std)
    torch.testing.assert_close(out[1, :, 2, 3], (1 - mean) / std)
    assert images.dtype == torch.uint8 and int(images[1].min()) == 255  # input left as it was


def test_only_the_configured_formats_are_decoded() -> None:
    """A TIFF named .jpg never reaches the TIFF decoder when the config names JPEG/PNG/WEBP only."""
    import io as _io

    import numpy as _np
    from PIL import Image as _Image

    from mm_ray.modalities.image_decode import ImagePreprocessor, formats_for
    from mm_ray.quarantine import Reason as _Reason
    from mm_ray.quarantine import SampleError as _SampleError

    buf = _io.BytesIO()
    _Image.fromarray(_np.full((8, 8, 3), 200, dtype=_np.uint8)).save(buf, format="TIFF")
    tiff = buf.getvalue()
    strict = ImagePreprocessor(size=4, formats=formats_for(["jpg", "png", "webp"]))
    with pytest.raises(_SampleError) as err:
        strict.decode(tiff)
    assert err.value.reason == _Reason.CORRUPT_IMAGE
    assert ImagePreprocessor(size=4, formats=None).decode(tiff).shape == (3, 4, 4)
    assert formats_for(["jpg", "jpeg", "png", "webp", "nope"]) == ("JPEG", "PNG", "WEBP")


def test_crop_box_draws_area_and_aspect_like_random_resized_crop():
    from mm_ray.modalities.image_decode import crop_box

    rng = np.random.default_rng(0)
    width, height, min_scale, max_aspect = 400, 300, 0.3, 1.5
    boxes = np.array([crop_box(width, height, min_scale, max_aspect, rng) for _ in range(4000)])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width + 1e-9).all() and (boxes[:, 3] <= height + 1e-9).all()
    aspect = w / h
    assert aspect.min() >= 1 / max_aspect - 1e-9 and aspect.max() <= max_aspect + 1e-9
    area = w * h / (width * height)
    assert area.min() >= min_scale - 1e-9 and area.max() <= 1 + 1e-9
    # Large draws that do not fit are redrawn, so the kept areas lean small; still spread over the range.
    assert area.min() < min_scale + 0.05 and area.max() > 0.9
    # Positions spread over the whole image: left edges from 0 to near the right.
    # (the narrowest box, 0.3 of the area at aspect 1/1.5, is 155 px wide: its left edge can reach 245)
    assert boxes[:, 0].min() < 5 and boxes[:, 0].max() > 230


def test_a_random_resized_crop_is_cut_from_the_source_before_resizing():
    # x encoded in the red channel: a crop's first and last columns say where in the source it was cut.
    ramp = np.zeros((256, 256, 3), dtype=np.uint8)
    ramp[:, :, 0] = np.arange(256, dtype=np.uint8)[None, :]
    data = encode(Image.fromarray(ramp), "PNG")
    whole = ImagePreprocessor(size=32).decode(data)
    cropper = ImagePreprocessor(size=32, random_crop=(0.25, 1.0), seed=1)
    crops = [cropper.decode(data) for _ in range(20)]
    spans = [(int(c[0, :, 0].mean()), int(c[0, :, -1].mean())) for c in crops]
    full_span = int(whole[0, :, -1].mean()) - int(whole[0, :, 0].mean())
    assert all(right - left < full_span for left, right in spans)  # every crop is narrower than the image
    assert len(set(spans)) > 10  # and each is cut somewhere else
    again = ImagePreprocessor(size=32, random_crop=(0.25, 1.0), seed=1)
    assert all(np.array_equal(c, again.decode(data)) for c in crops)  # a seed repeats its crops
    # The whole image at scale 1 and aspect 1 is the plain resize.
    assert np.array_equal(ImagePreprocessor(size=32, random_crop=(1.0, 1.0)).decode(data), whole)


@pytest.mark.parametrize("bad", [(0.0, 1.3), (1.2, 1.3), (0.5, 0.9)])
def test_a_bad_random_crop_is_an_error(bad):
    with pytest.raises(ValueError, match="random_crop"):
        ImagePreprocessor(size=32, random_crop=bad)

"""The ``image`` modality: JPEG/PNG/WebP members -> uint8 ``[3, S, S]`` -> a small CNN (or a torchvision model).

Settings: the ``image`` config section (``ImageConfig``: size, resize). Decoding: ``ImagePreprocessor``
(``mm_ray.modalities.image_decode``). Images travel as uint8 and are normalised on the training device.
Train-time augmentation: random resized crop, flip, small rotation and colour jitter (``train.augment``), the
crop drawn while decoding when training streams from the shards (``augment.at_decode``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mm_ray.config.schema import AugmentConfig, ImageConfig
from mm_ray.modalities.image_decode import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NAME,
    ImagePreprocessor,
    formats_for,
    normalize_images,
)
from mm_ray.modalities.spec import ColumnSpec, EncoderContext, ModalitySpec, PreprocessContext
from mm_ray.quarantine import Reason


def _shapes(settings: ImageConfig) -> dict[str, tuple[int, ...]]:
    return {NAME: (3, settings.size, settings.size)}


def _preprocessor_kwargs(settings: ImageConfig, ctx: PreprocessContext) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "size": settings.size,
        "resize": settings.resize,
        "formats": formats_for(ctx.extensions),
    }
    if ctx.augment is not None:
        # Cut from the full-resolution source while decoding: sharper than warping the resized image.
        kwargs["random_crop"] = (ctx.augment.crop_min_scale, ctx.augment.crop_max_aspect)
    return kwargs


def _encoder(ctx: EncoderContext) -> Any:
    # Imported here: the decoding actors import this module and never need torch.
    from mm_ray.encoders.builtin import ImageEncoder

    size = ctx.shapes[NAME][-1]
    if size < 2 ** (ctx.depth + 1):
        raise ValueError(f"image_size {size} is too small for depth {ctx.depth}")
    return ImageEncoder(width=ctx.width, depth=ctx.depth, out_dim=ctx.out_dim)


def _encode(encoder: Any, columns: Mapping[str, Any]) -> Any:
    images = columns[NAME]
    if not images.dtype.is_floating_point:
        # uint8 from the data plane: normalised here, on the device. An encoder from a library brings the
        # constants its weights were trained with.
        mean, std = getattr(encoder, "image_normalization", (IMAGENET_MEAN, IMAGENET_STD))
        images = normalize_images(images, mean, std)
    return encoder(images.to(next(encoder.parameters()).dtype))


def _augment(images: Any, present: Any, generator: Any, augment: AugmentConfig, settings: ImageConfig) -> Any:
    """One affine warp (crop, rotation, flip) and a colour jitter per image; rows without an image unchanged."""
    from mm_ray.preprocess.augment import (
        affine_warp,
        color_jitter,
        crop_rotate_flip_theta,
        keep_missing,
        uniform,
    )

    n, max_log_aspect = images.shape[0], math.log(augment.crop_max_aspect)
    # Every draw is made, in this order, even for ops that are off: the stream stays the same per seed.
    theta = crop_rotate_flip_theta(
        scale=uniform(generator, n, augment.crop_min_scale, 1.0),
        log_aspect=uniform(generator, n, -max_log_aspect, max_log_aspect),
        offset=uniform(generator, n, -1.0, 1.0, pairs=True),
        degrees=uniform(generator, n, -augment.rotate_degrees, augment.rotate_degrees),
        mirror=uniform(generator, n, 0.0, 1.0) < augment.flip,
    )
    jitter = (augment.brightness, augment.contrast, augment.saturation)
    factors = [uniform(generator, n, 1.0 - x, 1.0 + x) for x in jitter]
    warped = affine_warp(images.float(), theta.to(images.device))
    jittered = color_jitter(warped, *(f.to(images.device) for f in factors))
    augmented = jittered.round_().clamp_(0, 255).to(images.dtype)
    return keep_missing(augmented, images, present)


IMAGE = ModalitySpec(
    name=NAME,
    extensions=("jpg", "jpeg", "png", "webp"),
    settings_type=ImageConfig,
    columns=(ColumnSpec(NAME, "uint8"),),
    shapes=_shapes,
    preprocessor=ImagePreprocessor,
    preprocessor_kwargs=_preprocessor_kwargs,
    encoder=_encoder,
    encode=_encode,
    # Measured with the demo data (256-512 px JPEG): decode + resize ~2 ms a sample, like the audio's.
    cost_share=0.475,
    pool_cpus=0.3,
    reasons=(Reason.CORRUPT_IMAGE.value,),
    augment=_augment,
    library={"torchvision": "torchvision_image"},
    description="JPEG/PNG/WebP -> uint8 [3, S, S]; CNN encoder (or a torchvision model)",
)

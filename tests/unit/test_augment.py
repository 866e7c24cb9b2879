"""Train-time augmentation: seeding, the geometry of the warp, jitter bounds, audio gain/shift, masks, splits."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from mm_ray.config.load import load_config
from mm_ray.config.schema import AudioConfig, AugmentConfig, ImageConfig, TextConfig
from mm_ray.modalities import BUILTIN
from mm_ray.modalities.audio_decode import AudioPreprocessor
from mm_ray.modalities.augment import Augmenter, augment_split, build_augmenter
from mm_ray.preprocess.augment import add_gain, affine_warp, audio_gain_profile, crop_rotate_flip_theta
from mm_ray.preprocess.mel import dct_matrix, mfcc_features

AUDIO = "audio"
HAS_AUDIO = "has_audio"
HAS_IMAGE = "has_image"
IMAGE = "image"
INPUT_IDS = "input_ids"

# Every op off: each test turns on the one it checks.
OFF = {
    "crop_min_scale": 1.0,
    "crop_max_aspect": 1.0,
    "flip": 0.0,
    "rotate_degrees": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "gain_db": 0.0,
    "time_shift": 0.0,
}


def make_batch(n: int = 6, size: int = 24, rows: int = 16, frames: int = 40) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        # Mid-range pixels so brightness/contrast factors up to 1.5 never clip.
        IMAGE: torch.randint(60, 121, (n, 3, size, size), generator=gen, dtype=torch.uint8),
        AUDIO: torch.randn((n, rows, frames), generator=gen) - 5.0,
        HAS_IMAGE: torch.ones(n, dtype=torch.bool),
        HAS_AUDIO: torch.ones(n, dtype=torch.bool),
        INPUT_IDS: torch.arange(n * 4, dtype=torch.int32).view(n, 4),
    }


def augmenter_of(seed: int = 7, rank: int = 0, audio: AudioConfig | None = None, **settings) -> Augmenter:
    """An Augmenter over the default modalities with ``settings`` laid over ``AugmentConfig``."""
    config = dataclasses.replace(AugmentConfig(enabled=True), **settings)
    modalities = [(BUILTIN["image"], ImageConfig()), (BUILTIN["text"], TextConfig()),
                  (BUILTIN["audio"], audio or AudioConfig())]  # fmt: skip
    return Augmenter(config, modalities, seed=seed, rank=rank)


def augment(batch: dict, epoch: int = 0, **settings) -> dict:
    return next(augmenter_of(**{**OFF, **settings}).apply([batch], epoch))


def test_disabled_config_builds_no_augmenter_and_batches_pass_through() -> None:
    assert build_augmenter(AugmentConfig(), load_config(), seed=0, rank=0) is None
    batches = [make_batch()]
    assert augment_split(batches, None, split="train", epoch=0) is batches


def test_validation_batches_are_never_augmented() -> None:
    augmenter = build_augmenter(AugmentConfig(enabled=True), load_config(), seed=0, rank=0)
    assert isinstance(augmenter, Augmenter)
    batches = [make_batch()]
    assert augment_split(batches, augmenter, split="val", epoch=0) is batches
    trained = list(augment_split(batches, augmenter, split="train", epoch=0))
    assert not torch.equal(trained[0][IMAGE], batches[0][IMAGE])


def test_all_ops_off_is_the_identity() -> None:
    batch = make_batch()
    out = augment(batch)
    assert torch.equal(out[IMAGE], batch[IMAGE]) and torch.equal(out[AUDIO], batch[AUDIO])
    assert out[INPUT_IDS] is batch[INPUT_IDS]  # text is never touched


def test_same_seed_same_batches_other_epoch_or_rank_different() -> None:
    batches = [make_batch(), make_batch()]

    def run(seed: int, rank: int, epoch: int) -> list[torch.Tensor]:
        out = augmenter_of(seed=seed, rank=rank).apply(batches, epoch)
        return [t for b in out for t in (b[IMAGE], b[AUDIO])]

    first = run(0, 0, 0)
    assert all(torch.equal(a, b) for a, b in zip(first, run(0, 0, 0), strict=True))
    for other in (run(0, 0, 1), run(0, 1, 0), run(1, 0, 0)):
        assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])
    # Within an epoch the stream moves on: two equal input batches are augmented differently.
    assert not torch.equal(first[0], first[2])


def test_flip_mirrors_left_right_exactly() -> None:
    batch = make_batch()
    out = augment(batch, flip=1.0)
    assert torch.equal(out[IMAGE], torch.flip(batch[IMAGE], dims=[-1]))


def test_quarter_turn_is_rot90() -> None:
    images = make_batch(n=2)[IMAGE].float()
    n = images.shape[0]
    theta = crop_rotate_flip_theta(
        scale=torch.ones(n),
        log_aspect=torch.zeros(n),
        offset=torch.zeros(n, 2),
        degrees=torch.full((n,), 90.0),
        mirror=torch.zeros(n, dtype=torch.bool),
    )
    turned = affine_warp(images, theta).round()
    assert torch.equal(turned, torch.rot90(images, 1, dims=(-2, -1)))


def test_crop_and_rotation_keep_shape_dtype_and_value_range() -> None:
    batch = make_batch()
    out = augment(batch, crop_min_scale=0.3, crop_max_aspect=2.0, rotate_degrees=30.0)
    assert out[IMAGE].shape == batch[IMAGE].shape and out[IMAGE].dtype == torch.uint8
    # Bilinear interpolation with reflected borders never leaves the input's range.
    assert out[IMAGE].min() >= batch[IMAGE].min() and out[IMAGE].max() <= batch[IMAGE].max()
    assert not torch.equal(out[IMAGE], batch[IMAGE])


def test_crop_zooms_in() -> None:
    ramp = torch.linspace(0, 255, 64).round().to(torch.uint8)
    images = ramp.view(1, 1, 1, 64).expand(4, 3, 64, 64).contiguous()
    out = augment({IMAGE: images}, crop_min_scale=0.25, crop_max_aspect=1.0)[IMAGE].float()
    # A crop of width w (at most sqrt(0.25 .. 1) of the image) spans that fraction of the ramp.
    spans = out[:, 0, 32, -1] - out[:, 0, 32, 0]
    assert (spans < 250).any() and (spans > 0.5 * 255 - 8).all()


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_colour_jitter_changes_statistics_within_bounds(op: str) -> None:
    batch = make_batch(n=16)
    # Each channel shifted differently so the images have colour for saturation to act on.
    batch[IMAGE] = batch[IMAGE] + torch.tensor([0, 30, 60], dtype=torch.uint8).view(1, 3, 1, 1)
    x, y = batch[IMAGE].float(), augment(batch, **{op: 0.5})[IMAGE].float()
    if op == "brightness":
        ratio = y.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))
    elif op == "contrast":
        ratio = y.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # contrast pulls towards the mean grey
        torch.testing.assert_close(
            (y * luma).sum(1).mean((1, 2)), (x * luma).sum(1).mean((1, 2)), atol=1.0, rtol=0
        )
    else:
        spread = x.amax(dim=1) - x.amin(dim=1)  # a pixel's distance from grey, per channel spread
        ratio = (y.amax(dim=1) - y.amin(dim=1)).mean(dim=(1, 2)) / spread.mean(dim=(1, 2))
    assert ((ratio > 0.5 - 0.02) & (ratio < 1.5 + 0.02)).all()
    assert (ratio - 1).abs().max() > 0.1  # it did something


def test_saturation_leaves_grey_images_grey() -> None:
    grey = torch.full((2, 3, 8, 8), 90, dtype=torch.uint8)
    assert torch.equal(augment({IMAGE: grey}, saturation=0.9)[IMAGE], grey)


def test_gain_adds_one_constant_per_clip_within_the_db_range() -> None:
    batch = make_batch()
    diff = augment(batch, gain_db=6.0)[AUDIO] - batch[AUDIO]
    per_clip = diff[:, 0, 0]
    torch.testing.assert_close(diff, per_clip.view(-1, 1, 1).expand_as(diff), atol=1e-5, rtol=0)
    assert (per_clip.abs() <= 0.6 * math.log(10) + 1e-5).all() and per_clip.std() > 0


def tone_wav(amplitude: float) -> bytes:
    t = np.arange(16000) / 16000
    wave = amplitude * (np.sin(2 * np.pi * 440 * t) + np.random.default_rng(0).normal(0, 0.2, t.shape))
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_gain_matches_the_log_mel_of_a_louder_clip() -> None:
    # The stage's log-mel is the natural log of power: +6 dB must add 0.6 * ln 10 to every band.
    pre = AudioPreprocessor()
    quiet, loud = pre.decode(tone_wav(0.1)), pre.decode(tone_wav(0.1 * 10 ** (6 / 20)))
    gained = add_gain(torch.from_numpy(quiet)[None], torch.tensor([6.0]), torch.ones(64))[0].numpy()
    # Exact up to the 1e-6 floor inside the log: compare the bins well above it (mel power >= 1e-3).
    clear = quiet > math.log(1e-3)
    assert clear.mean() > 0.5
    np.testing.assert_allclose(gained[clear], loud[clear], atol=2e-3)


def test_gain_profile_of_mfccs_matches_mfccs_of_the_shifted_log_mel() -> None:
    log_mels = np.random.default_rng(0).normal(size=(2, 32, 30)).astype(np.float32)
    dct = dct_matrix(8, 32)
    profile = audio_gain_profile("mfcc", n_mels=32, n_mfcc=8, deltas=True)
    assert profile.shape == (24,) and np.isclose(profile[0], math.sqrt(32))
    shift = 0.6 * math.log(10)
    expected = mfcc_features(log_mels + shift, dct, deltas=True)
    gained = add_gain(
        torch.from_numpy(mfcc_features(log_mels, dct, deltas=True)),
        torch.full((2,), 6.0),
        torch.from_numpy(profile),
    )
    torch.testing.assert_close(gained, torch.from_numpy(expected), atol=1e-4, rtol=0)
    # The augmenter built for MFCC data moves each clip's rows by one random gain times this profile.
    cfg = load_config(None, ["audio.features=mfcc", "audio.n_mels=32", "audio.n_mfcc=8"])
    augment_cfg = dataclasses.replace(AugmentConfig(enabled=True), **{**OFF, "gain_db": 6.0})
    augmenter = build_augmenter(augment_cfg, cfg, seed=0, rank=0)
    features = torch.from_numpy(mfcc_features(log_mels, dct, deltas=True))
    moved = augmenter({"audio": features}, torch.Generator().manual_seed(0))["audio"] - features
    # c_0 moves by the same amount at every frame, within the dB range times the profile; deltas do not move,
    # nor (up to the DCT rows' rounding) the other coefficients.
    c0 = moved[:, 0, :]
    assert torch.allclose(c0, c0[:, :1].expand_as(c0), atol=1e-4)
    assert (c0[:, 0].abs() <= 0.6 * math.log(10) * profile[0] + 1e-4).all() and (c0[:, 0].abs() > 0).all()
    assert moved[:, 1:].abs().max() < 1e-3


def test_time_shift_rolls_a_marker_frame() -> None:
    n, frames = 8, 40
    audio = torch.zeros(n, 4, frames)
    audio[:, :, 10] = 1.0
    out = augment({AUDIO: audio}, time_shift=0.25)[AUDIO]
    positions = out.argmax(dim=-1)  # [n, rows]
    assert (positions == positions[:, :1]).all()  # every row of a clip moves together
    moved = positions[:, 0] - 10
    assert (moved.abs() <= 10).all() and len(set(moved.tolist())) > 1
    assert torch.equal(out.sum(dim=-1), audio.sum(dim=-1))  # nothing lost: a roll


def test_samples_without_the_modality_are_left_as_they_are() -> None:
    batch = make_batch()
    batch[HAS_IMAGE] = torch.tensor([True, False, True, False, True, False])
    batch[HAS_AUDIO] = torch.tensor([False, True, False, True, False, True])
    out = augment(batch, flip=1.0, gain_db=6.0, brightness=0.5)
    for column, flag in ((IMAGE, HAS_IMAGE), (AUDIO, HAS_AUDIO)):
        missing, present = ~batch[flag], batch[flag]
        assert torch.equal(out[column][missing], batch[column][missing])
        assert not torch.equal(out[column][present], batch[column][present])

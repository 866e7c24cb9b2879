"""The renderers: real encoded files whose symbol survives a 64x64 image / a 16 kHz resample."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import soundfile as sf
import soxr
from PIL import Image

from mm_ray.demo.render_audio import SAMPLE_RATES, pitch_frequencies, render_audio
from mm_ray.demo.render_image import PALETTE, SHAPES, make_noise_bank, render_image
from mm_ray.demo.render_text import TOPIC_WORDS, render_text


def dominant_frequency(wave: np.ndarray, sample_rate: int) -> float:
    mono = wave.mean(axis=1) if wave.ndim == 2 else wave
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / sample_rate)[spectrum.argmax()])


def border_color(pixels: np.ndarray) -> np.ndarray:
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(edge, axis=0)


def shape_signature(data: bytes) -> np.ndarray:
    """Downscale to 64x64 (as a model would see it), mask the non-background pixels, crop, normalise."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((64, 64)), dtype=np.float32)
    mask = np.linalg.norm(pixels - border_color(pixels), axis=2) > 60
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize((16, 16)), dtype=np.float32) / 255


@pytest.mark.parametrize("container", ["jpg", "png"])
def test_image_decodes_with_palette_border_and_requested_size(container):
    rng = np.random.default_rng(0)
    bank = make_noise_bank(rng, max_side=512)
    for color in range(len(PALETTE)):
        data = render_image(
            rng, color=color, shape=color, size=(300, 440), container=container, noise_bank=bank
        )
        image = Image.open(io.BytesIO(data))
        assert image.format == {"jpg": "JPEG", "png": "PNG"}[container]
        assert image.size == (300, 440)
        pixels = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32)
        distances = [np.abs(border_color(pixels) - np.array(rgb)).max() for _, rgb in PALETTE]
        assert int(np.argmin(distances)) == color
        assert distances[color] < 25


def test_shapes_are_recoverable_at_64_pixels():
    # templates: each shape centred and large on a square image; trials: random size, position, aspect, noise
    rng = np.random.default_rng(1)
    bank = make_noise_bank(rng, max_side=512)
    templates = [
        shape_signature(render_image(rng, color=0, shape=s, size=(256, 256))) for s in range(len(SHAPES))
    ]
    for trial in range(40):
        shape, color = trial % len(SHAPES), int(rng.integers(len(PALETTE)))
        size = (int(rng.integers(256, 513)), int(rng.integers(256, 513)))
        data = render_image(rng, color=color, shape=shape, size=size, container="jpg", noise_bank=bank)
        signature = shape_signature(data)
        errors = [np.abs(signature - t).mean() for t in templates]
        assert int(np.argmin(errors)) == shape, (SHAPES[shape], size)


def test_shape_templates_have_the_named_geometry():
    rng = np.random.default_rng(4)
    sig = {name: shape_signature(render_image(rng, color=2, shape=s, size=(256, 256))) > 0.5
           for s, name in enumerate(SHAPES)}  # fmt: skip
    fill = {name: m.mean() for name, m in sig.items()}
    corners = {name: m[[0, 0, -1, -1], [0, -1, 0, -1]].sum() for name, m in sig.items()}
    width = {name: m.sum(axis=1) for name, m in sig.items()}  # filled pixels per row, top to bottom
    assert fill["square"] > 0.95 and corners["square"] == 4
    assert 0.7 < fill["circle"] < 0.85 and corners["circle"] == 0 and sig["circle"][8, 8]
    assert corners["ring"] == 0 and not sig["ring"][7:9, 7:9].any() and sig["ring"][8, 1]
    assert width["triangle"][1] < 5 and width["triangle"][-1] == 16
    assert width["diamond"][1] < 5 and width["diamond"][8] > 14 and width["diamond"][-2] < 5
    assert width["hourglass"][0] == 16 and width["hourglass"][-1] == 16 and width["hourglass"][8] < 5
    assert (
        corners["cross"] == 0
        and sig["cross"][8].all()
        and sig["cross"][:, 8].all()
        and not sig["cross"][2, 2]
    )
    assert corners["star"] == 0 and sig["star"][8, 8] and fill["star"] < 0.5 and not sig["star"][-1, 8]


@pytest.mark.parametrize("size", [(512, 256), (256, 512)])
def test_shape_stays_inside_the_centred_square(size):
    # a short-side resize + centre crop must not cut the shape off
    rng = np.random.default_rng(5)
    width, height = size
    for trial in range(30):
        data = render_image(rng, color=trial % 8, shape=trial % 8, size=size, container="png")
        pixels = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32)
        ys, xs = np.nonzero(np.linalg.norm(pixels - border_color(pixels), axis=2) > 60)
        assert (width - 256) // 2 <= xs.min() and xs.max() < (width + 256) // 2
        assert (height - 256) // 2 <= ys.min() and ys.max() < (height + 256) // 2
        assert max(xs.max() - xs.min(), ys.max() - ys.min()) >= 0.3 * 256  # a star fills ~0.9 of its box


def test_image_rendering_is_deterministic_per_rng_state():
    def render(seed):
        rng = np.random.default_rng(seed)
        return render_image(
            rng, color=1, shape=4, size=(256, 300), noise_bank=make_noise_bank(rng, max_side=300)
        )

    assert render(5) == render(5)
    assert render(5) != render(6)


@pytest.mark.parametrize("container", ["wav", "flac"])
@pytest.mark.parametrize("sample_rate", SAMPLE_RATES)
def test_audio_tone_is_the_pitch_at_every_rate(container, sample_rate):
    rng = np.random.default_rng(sample_rate)
    freqs = pitch_frequencies(4)
    for pitch, channels in [(0, 1), (1, 2), (2, 1), (3, 2)]:
        data = render_audio(
            rng, pitch=pitch, num_symbols=4, sample_rate=sample_rate, channels=channels, container=container
        )
        wave, rate = sf.read(io.BytesIO(data), always_2d=True)
        assert sf.info(io.BytesIO(data)).format == container.upper()
        assert rate == sample_rate and wave.shape == (sample_rate, channels)
        assert 0.05 < np.abs(wave).max() <= 1.0
        assert dominant_frequency(wave, rate) == pytest.approx(freqs[pitch], rel=0.025)
        # what the audio preprocessor will do: resample to 16 kHz; the tone must survive
        resampled = soxr.resample(wave.astype(np.float32), rate, 16000)
        assert dominant_frequency(resampled, 16000) == pytest.approx(freqs[pitch], rel=0.025)


def test_pitches_are_between_300_and_3000_hz_and_well_separated():
    for k in (4, 6, 8):
        freqs = pitch_frequencies(k)
        assert freqs[0] == pytest.approx(300) and freqs[-1] == pytest.approx(3000)
        assert (freqs[1:] / freqs[:-1] > 1.3).all()  # >> the +-2 % jitter


def test_text_shows_one_topic_word_and_leaks_nothing_else():
    rng = np.random.default_rng(2)
    leaks = re.compile(r"\b(" + "|".join([*SHAPES, *(name for name, _ in PALETTE), "hz", "tone"]) + r")\b")
    for topic in range(len(TOPIC_WORDS)):
        for _ in range(30):
            text = render_text(rng, topic=topic, container="txt").decode("utf-8").lower()
            found = [
                t for t, words in enumerate(TOPIC_WORDS) if any(re.search(rf"\b{w}\b", text) for w in words)
            ]
            assert found == [topic], text
            assert not leaks.search(text), text


def test_text_json_container():
    rng = np.random.default_rng(3)
    record = json.loads(render_text(rng, topic=2, container="json"))
    assert record["source"] == "synthetic"
    assert any(w in record["caption"].lower() for w in TOPIC_WORDS[2])
    assert set(record) == {"caption", "source"}

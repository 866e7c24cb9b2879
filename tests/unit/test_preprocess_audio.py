"""AudioPreprocessor on real WAV / FLAC files written with soundfile in memory."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import soxr

from mm_ray.columns import REJECT, REJECT_DETAIL
from mm_ray.modalities.audio_decode import AudioPreprocessor
from mm_ray.preprocess.mel import mel_band_edges
from mm_ray.quarantine import Reason, SampleError

AUDIO = "audio"
AUDIO_BYTES = "audio_bytes"
HAS_AUDIO = "has_audio"

RATES = [8000, 22050, 44100, 48000]


def encode(wave: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(freq: float, rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


@pytest.fixture(scope="module")
def pre() -> AudioPreprocessor:
    return AudioPreprocessor()


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_any_rate_and_layout_gives_the_same_shape(pre, fmt: str, rate: int, channels: int):
    out = pre.decode(encode(tone(440.0, rate, 1.3, channels), rate, fmt))
    assert out.shape == (64, 101) and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_center_crop_seeks_in_compressed_streams():
    clip = encode(tone(440.0, 44100, 5.0, channels=2), 44100, "OGG")
    out = AudioPreprocessor(crop="center").decode(clip)
    assert out.shape == (64, 101) and np.isfinite(out).all() and out.std() > 0


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_tone_peaks_in_the_band_that_contains_it(pre, rate: int, freq: float):
    features = pre.decode(encode(tone(freq, rate, 1.0, channels=2), rate, "FLAC"))
    loudest = int(features[:, 5:-5].mean(axis=1).argmax())  # skip edge frames (signal onset)
    edges = mel_band_edges(64, 0.0, 8000.0)
    assert edges[loudest] < freq < edges[loudest + 2]  # band i spans edges i .. i + 2


def test_stereo_is_averaged_to_mono():
    left = tone(440.0, 16000, 1.0)
    right = tone(1000.0, 16000, 1.0)
    wave = AudioPreprocessor().load_waveform(encode(np.stack([left, right], 1), 16000, subtype="FLOAT"))
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-6)


def test_short_clip_is_zero_padded():
    ramp = np.linspace(0.01, 0.5, 8000, dtype=np.float32)
    wave = AudioPreprocessor().load_waveform(encode(ramp, 16000, subtype="FLOAT"))
    assert wave.shape == (16000,)
    np.testing.assert_array_equal(wave[:8000], ramp)
    assert not wave[8000:].any()


@pytest.mark.parametrize(("crop", "start"), [("start", 0), ("center", 16000)])
def test_long_clip_is_cropped(crop: str, start: int):
    ramp = np.linspace(-0.9, 0.9, 48000, dtype=np.float32)  # 3 s at 16 kHz
    wave = AudioPreprocessor(crop=crop).load_waveform(encode(ramp, 16000, subtype="FLOAT"))
    np.testing.assert_array_equal(wave, ramp[start : start + 16000])


@pytest.mark.parametrize("crop", ["start", "center"])
@pytest.mark.parametrize("rate", [22050, 48000])
def test_windowed_decode_matches_resampling_the_whole_clip(crop: str, rate: int):
    rng = np.random.default_rng(0)
    t = np.arange(4 * rate) / rate
    wave = (0.3 * np.sin(2 * np.pi * 300 * t) + 0.2 * np.sin(2 * np.pi * 2500 * t)).astype(np.float32)
    wave += 0.01 * rng.standard_normal(wave.shape).astype(np.float32)
    got = AudioPreprocessor(crop=crop).load_waveform(encode(wave, rate, subtype="FLOAT"))
    full = soxr.resample(wave, rate, 16000, quality="HQ")
    start = 0 if crop == "start" else round((len(wave) - rate) // 2 * 16000 / rate)
    # Without the read margin the cut edges differ by ~1e-2; with it the results agree to float precision.
    np.testing.assert_allclose(got, full[start : start + 16000], atol=1e-5)


def test_duration_and_hop_set_the_frame_count():
    pre = AudioPreprocessor(duration_s=2.0, hop_length=200, n_mels=40)
    assert pre.decode(encode(tone(440.0, 44100, 0.5), 44100)).shape == (40, 1 + 32000 // 200)


def test_empty_audio(pre):
    zero_frames = encode(np.zeros(0, dtype=np.float32), 16000)
    for payload in (zero_frames, b""):
        with pytest.raises(SampleError) as info:
            pre.decode(payload)
        assert info.value.reason is Reason.EMPTY_AUDIO


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8).tobytes(), id="garbage"),
        pytest.param(b"RIFF\x24\x00\x00\x00WAVEfmt ", id="cut-header"),
        pytest.param(encode(np.full(800, np.nan, dtype=np.float32), 16000, subtype="FLOAT"), id="nan"),
    ],
)
def test_corrupt_audio(pre, payload: bytes):
    with pytest.raises(SampleError) as info:
        pre.decode(payload)
    assert info.value.reason is Reason.CORRUPT_AUDIO
    assert "0x" not in info.value.detail  # no object reprs (addresses) in the ledger


def test_batch_rejects_bad_rows_and_keeps_good_ones(pre):
    good = encode(tone(1000.0, 44100, 1.0), 44100, "FLAC")
    raw = np.array([good, b"", b"not audio at all" * 10, None, good], dtype=object)
    out = pre({AUDIO_BYTES: raw})
    assert out[AUDIO].shape == (5, 64, 101) and out[AUDIO].dtype == np.float32
    assert list(out[REJECT]) == ["", Reason.EMPTY_AUDIO.value, Reason.CORRUPT_AUDIO.value, "", ""]
    assert out[REJECT_DETAIL][1] and out[REJECT_DETAIL][2]
    assert list(out[HAS_AUDIO]) == [True, False, False, False, True]
    assert not out[AUDIO][1:4].any()
    np.testing.assert_array_equal(out[AUDIO][0], pre.decode(good))
    np.testing.assert_array_equal(out[AUDIO][4], out[AUDIO][0])


def test_invalid_settings_are_errors():
    with pytest.raises(ValueError, match="crop"):
        AudioPreprocessor(crop="end")
    with pytest.raises(ValueError, match="half a window"):
        AudioPreprocessor(duration_s=0.01)


def test_a_random_window_is_a_contiguous_slice_starting_anywhere_in_a_longer_clip():
    rate, seconds = 16000, 2.0
    ramp = np.arange(round(rate * seconds), dtype=np.float32) / (rate * seconds)  # value = position in clip
    data = encode(ramp, rate, subtype="FLOAT")
    pre = AudioPreprocessor(sample_rate=rate, duration_s=0.5, crop="random", seed=0)
    step = 1 / (rate * seconds)
    starts = []
    for _ in range(50):
        window = pre.load_waveform(data)
        start = round(float(window[0]) / step)
        np.testing.assert_allclose(window, ramp[start : start + pre.num_samples], atol=1e-7)
        starts.append(start)
    assert min(starts) >= 0 and max(starts) <= ramp.size - pre.num_samples
    assert len(set(starts)) > 40 and max(starts) - min(starts) > 0.5 * (ramp.size - pre.num_samples)
    # A clip no longer than the window starts at 0 and is padded, as with the other crops.
    short = pre.load_waveform(encode(ramp[: rate // 4], rate, subtype="FLOAT"))
    np.testing.assert_allclose(short[: rate // 4], ramp[: rate // 4], atol=1e-7)
    assert not short[rate // 4 :].any()

"""MFCCs: the DCT against independent references, regression deltas, and the audio stage with features=mfcc."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import soundfile as sf

from mm_ray.config.schema import Config
from mm_ray.modalities.audio_decode import AudioPreprocessor
from mm_ray.preprocess.mel import dct_matrix, delta, feature_rows, mfcc_features

AUDIO = "audio"
AUDIO_BYTES = "audio_bytes"
HAS_AUDIO = "has_audio"


def wav(freq: float, rate: int = 22050, seconds: float = 1.2) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    noise = np.random.default_rng(0).normal(0, 0.01, t.shape)
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def test_dct_matrix_is_orthonormal() -> None:
    basis = dct_matrix(32, 32).astype(np.float64)
    np.testing.assert_allclose(basis @ basis.T, np.eye(32), atol=1e-6)


def test_dct_matrix_matches_scipy_ortho_dct_ii() -> None:
    fft = pytest.importorskip("scipy.fft")
    x = np.random.default_rng(1).normal(size=(3, 40, 7)).astype(np.float32)
    expected = fft.dct(x, type=2, norm="ortho", axis=1)[:, :13]
    np.testing.assert_allclose(mfcc_features(x, dct_matrix(13, 40), deltas=False), expected, atol=1e-5)


def test_first_coefficient_is_the_scaled_band_mean() -> None:
    # Independent of the cosine formula: c_0 of an orthonormal DCT-II is sum(x) / sqrt(N).
    x = np.random.default_rng(2).normal(size=(2, 64, 5)).astype(np.float32)
    c0 = mfcc_features(x, dct_matrix(20, 64), deltas=False)[:, 0]
    np.testing.assert_allclose(c0, x.sum(axis=1) / np.sqrt(64), rtol=1e-5, atol=1e-6)


def test_deltas_of_a_linear_ramp_are_its_slope_inside_and_shrink_at_the_edges() -> None:
    ramp = np.tile(3.0 * np.arange(12, dtype=np.float32), (2, 1))
    d = delta(ramp)
    np.testing.assert_allclose(d[:, 2:-2], 3.0, rtol=1e-6)
    # Frame 0 with the edge repeated: (1 * (3 - 0) + 2 * (6 - 0)) / 10 = 1.5.
    np.testing.assert_allclose(d[:, 0], 1.5, rtol=1e-6)
    np.testing.assert_allclose(delta(d)[:, 4:-4], 0.0, atol=1e-6)
    assert d.dtype == np.float32 and d.shape == ramp.shape


def test_mfcc_features_stack_coefficients_deltas_and_delta_deltas() -> None:
    log_mels = np.random.default_rng(3).normal(size=(4, 32, 50)).astype(np.float32)
    dct = dct_matrix(10, 32)
    out = mfcc_features(log_mels, dct, deltas=True)
    assert out.shape == (4, 30, 50) and out.dtype == np.float32
    coeffs = mfcc_features(log_mels, dct, deltas=False)
    np.testing.assert_array_equal(out[:, :10], coeffs)
    np.testing.assert_allclose(out[:, 10:20], delta(coeffs), atol=1e-6)
    np.testing.assert_allclose(out[:, 20:], delta(delta(coeffs)), atol=1e-6)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="n_mfcc"):
        dct_matrix(80, 64)
    with pytest.raises(ValueError, match="features"):
        feature_rows("cepstrum", 64, 20, True)
    with pytest.raises(ValueError, match="features"):
        AudioPreprocessor(features="cepstrum")  # type: ignore[arg-type]


@pytest.mark.parametrize(("deltas", "rows"), [(True, 60), (False, 20)])
def test_audio_stage_outputs_mfccs_of_its_log_mels(deltas: bool, rows: int) -> None:
    pre = AudioPreprocessor(features="mfcc", n_mfcc=20, deltas=deltas)
    assert pre.output_shape == (rows, 101)
    batch = pre({AUDIO_BYTES: np.array([wav(440.0), None, wav(1500.0, rate=16000)], dtype=object)})
    out = batch[AUDIO]
    assert out.shape == (3, rows, 101) and out.dtype == np.float32
    assert batch[HAS_AUDIO].tolist() == [True, False, True]
    assert not out[1].any()  # a missing clip stays all zeros
    log_mel = AudioPreprocessor().decode(wav(440.0))
    np.testing.assert_allclose(out[0, 0], log_mel.sum(axis=0) / np.sqrt(64), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pre.decode(wav(440.0)), out[0], atol=1e-5)
    assert not np.allclose(out[0], out[2])  # different tones, different coefficients


def test_log_mel_stays_the_default_shape() -> None:
    assert AudioPreprocessor(n_mfcc=10, deltas=False).output_shape == (64, 101)


def test_preprocess_config_hash_covers_the_feature_keys() -> None:
    from mm_ray.data.manifest import preprocess_config_hash

    base = Config()
    hashes = {
        preprocess_config_hash(
            dataclasses.replace(base, audio=dataclasses.replace(base.audio, **change)), "{}"
        )
        for change in ({}, {"features": "mfcc"}, {"n_mfcc": 13}, {"deltas": False})
    }
    assert len(hashes) == 4


def test_an_mfcc_config_reaches_the_audio_stage_and_the_cache_shapes() -> None:
    """The config's feature keys are what the Ray Data audio pool builds and what the cache manifest records
    as the model's audio input (the trainer sizes the audio encoder from the manifest)."""
    from mm_ray.config.load import load_config
    from mm_ray.data.manifest import cache_manifest
    from mm_ray.data.pipeline import preprocessor_kwargs

    cfg = load_config(None, ["audio.features=mfcc", "audio.n_mfcc=13", "audio.n_mels=32"])
    pre = AudioPreprocessor(**preprocessor_kwargs(cfg, "{}")["audio"])
    summary = {"samples_ok": 1, "samples_read": 1, "samples_quarantined": 0, "quarantine_reasons": {}}
    manifest = cache_manifest(cfg, summary, [], "{}", 0.0)
    assert pre.output_shape == (39, 101)
    assert manifest.shapes["audio"] == (39, 101)
    assert manifest.preprocess.modalities["audio"]["features"] == "mfcc"

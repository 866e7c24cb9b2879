"""Mel scale, filterbank and STFT of mm_ray.preprocess.mel, checked against formulas and torch.stft."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mm_ray.preprocess.mel import (
    LOG_EPS,
    hann_window,
    hz_to_mel,
    log_mel_spectrogram,
    mel_band_edges,
    mel_filterbank,
    mel_to_hz,
    num_frames,
    power_spectrogram,
)


def test_slaney_scale_known_points():
    np.testing.assert_allclose(hz_to_mel([0.0, 200.0, 1000.0, 6400.0]), [0.0, 3.0, 15.0, 42.0])


def test_htk_scale_known_points():
    np.testing.assert_allclose(hz_to_mel(700.0, htk=True), 2595.0 * np.log10(2.0))


@pytest.mark.parametrize("htk", [False, True])
def test_mel_to_hz_inverts_hz_to_mel(htk: bool):
    freqs = np.array([0.0, 55.0, 440.0, 999.0, 1000.0, 4000.0, 8000.0, 22050.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(freqs, htk), htk), freqs, rtol=1e-10, atol=1e-9)


def test_filterbank_triangles_peak_at_their_centres():
    fb = mel_filterbank(16000, 512, 40)
    assert fb.shape == (40, 257) and fb.dtype == np.float32 and (fb >= 0).all()
    bin_hz = 16000 / 512
    centres = mel_band_edges(40, 0.0, 8000.0)[1:-1]
    peak_hz = fb.argmax(axis=1) * bin_hz
    # Within one bin: above 1 kHz the triangles are lopsided, so the top bin may not be the nearest.
    assert np.abs(peak_hz - centres).max() < bin_hz


def test_filterbank_is_area_normalized():
    fb = mel_filterbank(16000, 2048, 40).astype(np.float64)
    area_hz = fb.sum(axis=1) * (16000 / 2048)
    # Each triangle has height 2 / width, so unit area (up to the bin sampling of narrow bands).
    np.testing.assert_allclose(area_hz, 1.0, rtol=0.02)


def test_filterbank_respects_f_min_and_f_max():
    fb = mel_filterbank(16000, 400, 32, f_min=300.0, f_max=4000.0)
    bins_hz = np.fft.rfftfreq(400, 1 / 16000)
    assert not fb[:, bins_hz <= 300.0].any() and not fb[:, bins_hz >= 4000.0].any()


def test_too_many_mels_is_an_error():
    with pytest.raises(ValueError, match="no FFT bin"):
        mel_filterbank(16000, 400, 256)
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(16000, 400, 64, f_max=9000.0)


def test_window_is_torch_periodic_hann():
    np.testing.assert_allclose(hann_window(400), torch.hann_window(400, periodic=True).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("num_samples", "n_fft", "hop"), [(16000, 400, 160), (8000, 512, 128), (999, 256, 100)]
)
def test_stft_power_matches_torch(num_samples: int, n_fft: int, hop: int):
    rng = np.random.default_rng(0)
    waves = rng.standard_normal((3, num_samples)).astype(np.float32)
    ours = power_spectrogram(waves, hann_window(n_fft), hop)
    ref = torch.stft(
        torch.from_numpy(waves).double(),
        n_fft,
        hop_length=hop,
        window=torch.hann_window(n_fft, periodic=True, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    ref_power = (ref.abs() ** 2).numpy().transpose(0, 2, 1)
    assert ours.shape == ref_power.shape
    assert ours.shape[1] == num_frames(num_samples, n_fft, hop)
    np.testing.assert_allclose(ours, ref_power, rtol=1e-3, atol=1e-3 * ref_power.max())


def test_log_mel_matches_torch_reference():
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    waves = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal((130, 16000))).astype(np.float32)
    fb = mel_filterbank(16000, 400, 64)
    ours = log_mel_spectrogram(waves, hann_window(400), fb, 160)  # 130 rows: more than one chunk
    spec = torch.stft(
        torch.from_numpy(waves).double(),
        400,
        hop_length=160,
        window=torch.hann_window(400, periodic=True, dtype=torch.float64),
        center=True,
        return_complex=True,
    )
    ref = torch.log(torch.from_numpy(fb).double() @ spec.abs() ** 2 + LOG_EPS).numpy()
    assert ours.shape == ref.shape == (130, 64, 101) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)


def test_num_frames_formula():
    assert num_frames(16000, 400, 160) == 101
    assert num_frames(16001, 400, 160) == 101
    assert num_frames(16160, 400, 160) == 102

"""Log-mel spectrograms and MFCCs in numpy: window, mel filterbank, a batched STFT, DCT and deltas.

Build the window and filterbank once, then transform whole batches of equal-length waveforms::

    window = hann_window(400)
    fbank = mel_filterbank(sample_rate=16000, n_fft=400, n_mels=64)
    feats = log_mel_spectrogram(waves, window=window, filterbank=fbank, hop_length=160)
    # waves float32 [B, T] -> feats float32 [B, 64, 1 + T // 160]

Conventions (the same as ``torch.stft(center=True, pad_mode="reflect")`` and librosa's defaults):

* periodic Hann window;
* frames are centred: the signal is reflect-padded by ``n_fft // 2`` on both sides, so frame ``t``
  is centred on sample ``t * hop_length`` and there are ``1 + T // hop_length`` frames (even n_fft);
* power spectrum ``|rfft|^2``;
* Slaney mel scale (linear below 1 kHz, logarithmic above) with Slaney area normalization: each
  triangle is scaled to ``2 / (upper edge - lower edge)`` in Hz, so wide high-frequency bands do
  not dominate. This matches ``librosa.filters.mel`` defaults. ``htk=True`` gives the HTK scale
  ``2595 * log10(1 + f / 700)`` instead;
* ``log(mel + 1e-6)`` (natural log of power: a gain of ``g`` dB adds ``g / 10 * ln 10`` to every band).

MFCCs are taken from those log-mels (what ``librosa.feature.mfcc`` and torchaudio's ``MFCC`` do)::

    dct = dct_matrix(n_mfcc=20, n_mels=64)
    coeffs = mfcc_features(feats, dct, deltas=True)   # [B, 64, frames] -> float32 [B, 60, frames]

* orthonormal DCT-II over the mel axis (``scipy.fft.dct(x, type=2, norm="ortho")``), first ``n_mfcc`` kept;
* deltas by the standard regression over +-2 frames, ``d_t = sum_n n (c_{t+n} - c_{t-n}) / (2 sum_n n^2)``,
  with the edge frames repeated; delta-deltas are the deltas of the deltas. They are stacked after the
  coefficients along the feature axis: rows ``[c_0..c_{n-1}, d_0.., dd_0..]``.
"""

from __future__ import annotations

import numpy as np

# Slaney scale: 3 mels per 200 Hz up to 1 kHz, then 27 mels per factor of 6.4 in frequency.
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL  # 15
_SLANEY_LOG_STEP = np.log(6.4) / 27.0

LOG_EPS = 1e-6
# Waveforms per STFT call: bounds the temporary frame and spectrum arrays (~10 MiB per 64 rows
# of one second at 16 kHz) without giving up the vectorization.
_STFT_CHUNK = 64


def hz_to_mel(freqs: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Frequency in Hz -> mel (Slaney scale unless ``htk``)."""
    freqs = np.asarray(freqs, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + freqs / 700.0)
    linear = freqs / _SLANEY_HZ_PER_MEL
    with np.errstate(divide="ignore"):  # log of 0 Hz is computed, then discarded by the where
        log = _SLANEY_LOG_START_MEL + np.log(freqs / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP
    return np.where(freqs >= _SLANEY_LOG_START_HZ, log, linear)


def mel_to_hz(mels: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Mel -> frequency in Hz; the inverse of ``hz_to_mel``."""
    mels = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    linear = mels * _SLANEY_HZ_PER_MEL
    log = _SLANEY_LOG_START_HZ * np.exp(_SLANEY_LOG_STEP * (mels - _SLANEY_LOG_START_MEL))
    return np.where(mels >= _SLANEY_LOG_START_MEL, log, linear)


def mel_band_edges(n_mels: int, f_min: float, f_max: float, htk: bool = False) -> np.ndarray:
    """``n_mels + 2`` frequencies (Hz), equally spaced in mel: band ``i`` rises from edge ``i``,
    peaks at edge ``i + 1`` (its centre frequency) and falls to zero at edge ``i + 2``."""
    mels = np.linspace(hz_to_mel(f_min, htk), hz_to_mel(f_max, htk), n_mels + 2)
    return mel_to_hz(mels, htk)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    htk: bool = False,
) -> np.ndarray:
    """Triangular mel filters, float32 ``[n_mels, n_fft // 2 + 1]``, area-normalized (Slaney).

    Raises ``ValueError`` when a band falls between two FFT bins and would always be zero
    (too many mels for this ``n_fft``).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}")
    bin_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = mel_band_edges(n_mels, f_min, f_max, htk)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_freqs - lower) / (centre - lower)
    falling = (upper - bin_freqs) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)
    empty = np.flatnonzero(weights.max(axis=1) <= 0)
    if empty.size:
        raise ValueError(
            f"mel bands {empty.tolist()} contain no FFT bin: use fewer mels (n_mels={n_mels}) "
            f"or a larger n_fft (n_fft={n_fft})"
        )
    return weights.astype(np.float32)


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (``torch.hann_window(n_fft, periodic=True)``), float32."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def num_frames(num_samples: int, n_fft: int, hop_length: int) -> int:
    """Frames of a centred STFT: ``1 + num_samples // hop_length`` for an even ``n_fft``."""
    return 1 + (num_samples + 2 * (n_fft // 2) - n_fft) // hop_length


def power_spectrogram(waves: np.ndarray, window: np.ndarray, hop_length: int) -> np.ndarray:
    """Centred STFT power of float32 ``[B, T]`` waveforms -> float32 ``[B, frames, n_fft // 2 + 1]``.

    Frames are a strided view of the padded signal (no copy until the window is applied), and
    one ``rfft`` call transforms every frame of every waveform.
    """
    n_fft = window.shape[0]
    pad = n_fft // 2
    padded = np.pad(waves, ((0, 0), (pad, pad)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop_length]
    spectrum = np.fft.rfft(frames * window, axis=-1)  # float32 in -> complex64 out
    return spectrum.real**2 + spectrum.imag**2


def log_mel_spectrogram(
    waves: np.ndarray, window: np.ndarray, filterbank: np.ndarray, hop_length: int
) -> np.ndarray:
    """float32 ``[B, T]`` waveforms -> float32 ``[B, n_mels, frames]`` log-mel spectrograms."""
    waves = np.asarray(waves, dtype=np.float32)
    frames = num_frames(waves.shape[1], window.shape[0], hop_length)
    out = np.empty((waves.shape[0], filterbank.shape[0], frames), dtype=np.float32)
    for start in range(0, waves.shape[0], _STFT_CHUNK):
        power = power_spectrogram(waves[start : start + _STFT_CHUNK], window, hop_length)
        mel = np.matmul(filterbank, power.transpose(0, 2, 1))  # [b, n_mels, frames]
        np.log(mel + LOG_EPS, out=out[start : start + _STFT_CHUNK])
    return out


DELTA_WIDTH = 2
"""Frames on each side of the delta regression (HTK's and librosa's usual window of 5 frames)."""


def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II basis, float32 ``[n_mfcc, n_mels]``: ``dct_matrix(k, n) @ x`` equals the first
    ``k`` coefficients of ``scipy.fft.dct(x, type=2, norm="ortho")`` along the mel axis.

    A matrix rather than ``scipy.fft.dct`` (what torchaudio does too): only ``n_mfcc`` of ``n_mels`` outputs
    are kept, one ``matmul`` transforms a whole batch, and scipy is not a dependency of the package.
    """
    if not 0 < n_mfcc <= n_mels:
        raise ValueError(f"need 0 < n_mfcc <= n_mels, got n_mfcc={n_mfcc}, n_mels={n_mels}")
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels)) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)  # the orthonormal scaling of the constant (k = 0) basis vector
    return basis.astype(np.float32)


def delta(features: np.ndarray, width: int = DELTA_WIDTH) -> np.ndarray:
    """Regression deltas along the last (frame) axis, edge-padded; same shape and dtype as ``features``."""
    frames = features.shape[-1]
    pad = [(0, 0)] * (features.ndim - 1) + [(width, width)]
    padded = np.pad(features, pad, mode="edge")
    out = np.zeros_like(features)
    for n in range(1, width + 1):
        out += n * (padded[..., width + n : width + n + frames] - padded[..., width - n : width - n + frames])
    out /= 2 * sum(n * n for n in range(1, width + 1))
    return out


def mfcc_features(log_mels: np.ndarray, dct: np.ndarray, deltas: bool = True) -> np.ndarray:
    """float32 ``[B, n_mels, frames]`` log-mels -> float32 MFCCs ``[B, n_mfcc, frames]``, or
    ``[B, 3 * n_mfcc, frames]`` with their deltas and delta-deltas when ``deltas``."""
    coeffs = np.matmul(dct, log_mels)
    if not deltas:
        return coeffs
    first = delta(coeffs)
    return np.concatenate([coeffs, first, delta(first)], axis=-2)


def feature_rows(features: str, n_mels: int, n_mfcc: int, deltas: bool) -> int:
    """Rows of one clip's feature array: ``n_mels`` for log-mel, ``n_mfcc`` (x3 with deltas) for MFCC."""
    if features == "log_mel":
        return n_mels
    if features == "mfcc":
        return n_mfcc * (3 if deltas else 1)
    raise ValueError(f"features must be 'log_mel' or 'mfcc', got {features!r}")

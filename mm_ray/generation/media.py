"""Generated samples as files: PNG images, log-mel plots, and audio through Griffin-Lim.

    png = image_png(pixels)                                   # float [3, S, S] in [0, 1] -> PNG bytes
    png = mel_png(log_mel, title="text -> audio")             # [n_mels, T] log-mel -> a PNG plot
    wave = griffin_lim(log_mel, AudioPreprocessor(**kwargs))  # float32 [num_samples] at its sample rate
    wav = wav_bytes(wave, sample_rate)                        # 16-bit PCM WAV
    grid = image_grid(images)                                 # [rows, cols, 3, S, S] -> one PNG

The log-mel is inverted with the preprocessor's own mel filterbank, window and hop: mel power ``exp(x) - eps``,
its least-squares linear spectrum through the filterbank's pseudo-inverse (clipped at 0), the magnitude's square
root, then Griffin-Lim's alternating projections (Griffin & Lim, 1984) over ``torch.stft`` / ``torch.istft``,
which frame the signal exactly as the preprocessor does (centred, reflect padding, periodic Hann window). The
phase is made up and the mel bands are coarser than the spectrum, so the audio is an approximation: the pitch
of a tone survives, its fine timbre does not. MFCC features cannot be inverted this way (``features=log_mel``
only). Pure numpy, torch, Pillow and matplotlib (a ``Figure`` without pyplot): no Ray.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from mm_ray.preprocess.mel import LOG_EPS


def image_png(pixels: np.ndarray) -> bytes:
    """float ``[3, S, S]`` in ``[0, 1]`` -> PNG bytes."""
    array = np.clip(np.rint(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(array.transpose(1, 2, 0)).save(out, format="PNG")
    return out.getvalue()


def image_grid(images: np.ndarray, pad: int = 2) -> bytes:
    """float ``[rows, cols, 3, S, S]`` in ``[0, 1]`` -> one PNG with a ``pad``-pixel white border between cells."""
    rows, cols, _, h, w = images.shape
    canvas = np.ones((3, rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            canvas[:, y : y + h, x : x + w] = images[r, c]
    return image_png(canvas)


def mel_png(log_mel: np.ndarray, *, title: str = "", hop_seconds: float | None = None) -> bytes:
    """A log-mel ``[n_mels, T]`` drawn as an image (mel band up, time across) with a colour bar -> PNG bytes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3), dpi=100)
    ax = fig.add_subplot()
    frames = log_mel.shape[1]
    extent = (0, frames * hop_seconds if hop_seconds else frames, 0, log_mel.shape[0])
    shown = ax.imshow(log_mel, origin="lower", aspect="auto", extent=extent, cmap="magma")
    ax.set_xlabel("seconds" if hop_seconds else "frame")
    ax.set_ylabel("mel band")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=ax, label="log power")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def griffin_lim(log_mel: np.ndarray, preprocessor, *, iterations: int = 32, seed: int = 0) -> np.ndarray:
    """A waveform whose log-mel approximates ``log_mel`` ``[n_mels, T]`` under ``preprocessor`` (an
    ``mm_ray.preprocess.audio.AudioPreprocessor``): float32 ``[num_samples]`` at its sample rate, peak <= 0.9."""
    if preprocessor.dct is not None:
        raise ValueError("Griffin-Lim needs log-mel features (audio.features=log_mel), not MFCCs")
    filterbank = np.asarray(preprocessor.filterbank, dtype=np.float64)  # [n_mels, n_fft // 2 + 1]
    power = np.maximum(np.exp(np.asarray(log_mel, dtype=np.float64)) - LOG_EPS, 0.0)
    linear = np.maximum(np.linalg.pinv(filterbank) @ power, 0.0)  # [bins, T]
    magnitude = torch.from_numpy(np.sqrt(linear))
    window = torch.from_numpy(np.asarray(preprocessor.window, dtype=np.float64))
    n_fft, hop, length = window.shape[0], preprocessor.hop_length, preprocessor.num_samples
    stft = {"n_fft": n_fft, "hop_length": hop, "window": window, "center": True}
    rng = torch.Generator().manual_seed(seed)
    angles = torch.exp(2j * torch.pi * torch.rand(magnitude.shape, generator=rng, dtype=torch.float64))
    wave = torch.zeros(length, dtype=torch.float64)
    for _ in range(iterations):
        wave = torch.istft(magnitude * angles, length=length, **stft)
        rebuilt = torch.stft(wave, pad_mode="reflect", return_complex=True, **stft)
        angles = torch.exp(1j * torch.angle(rebuilt))
    wave = torch.istft(magnitude * angles, length=length, **stft).numpy()
    peak = np.abs(wave).max()
    return (wave * (0.9 / peak) if peak > 0 else wave).astype(np.float32)


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """float ``[T]`` in ``[-1, 1]`` -> 16-bit PCM WAV bytes."""
    out = io.BytesIO()
    sf.write(out, np.asarray(wave, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return out.getvalue()

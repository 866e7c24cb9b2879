"""Render a pitch symbol as an encoded 1-second tone (WAV PCM_16 or FLAC).

The K pitch frequencies are spaced geometrically from 300 Hz to 3000 Hz (for K=4: 300, 646, 1392, 3000 Hz),
which is roughly even on the mel scale above 1 kHz and keeps >= 2.5 mel bins between neighbours (K=8) in a 64-bin
log-mel at 16 kHz; all are below 4 kHz, so an 8 kHz file still holds its tone. Nuisances: +-2 % pitch jitter,
random phase and amplitude, a weaker 3rd harmonic (the 2nd would sit within ~4 % of a neighbour's fundamental
for K=8; it is left out where it would alias), white noise, and a short fade in/out.

Usage::

    data = render_audio(rng, pitch=1, num_symbols=4, sample_rate=16000, channels=1, container="flac")
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

SAMPLE_RATES = (8000, 16000, 22050, 44100, 48000)
DURATION_S = 1.0
PITCH_JITTER = 0.02
LOWEST_HZ, HIGHEST_HZ = 300.0, 3000.0


def pitch_frequencies(num_symbols: int) -> np.ndarray:
    """The nominal tone frequency (Hz) of each pitch symbol."""
    return LOWEST_HZ * (HIGHEST_HZ / LOWEST_HZ) ** (np.arange(num_symbols) / (num_symbols - 1))


def synthesize(rng: np.random.Generator, *, frequency: float, sample_rate: int, channels: int) -> np.ndarray:
    """Float32 waveform [frames, channels] in [-1, 1] of a jittered, noisy tone at ``frequency``."""
    t = np.arange(int(DURATION_S * sample_rate)) / sample_rate
    f0 = frequency * (1.0 + rng.uniform(-PITCH_JITTER, PITCH_JITTER))
    wave = np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi))
    if 3 * f0 < 0.45 * sample_rate:
        wave += rng.uniform(0.15, 0.4) * np.sin(2 * np.pi * 3 * f0 * t + rng.uniform(0, 2 * np.pi))
    wave *= rng.uniform(0.2, 0.8) / np.abs(wave).max()
    fade = int(rng.uniform(0.01, 0.03) * sample_rate)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))  # raised cosine: no click at the edges
    wave[:fade] *= ramp
    wave[-fade:] *= ramp[::-1]
    noise_level = rng.uniform(0.003, 0.02)
    gains = [1.0] + [rng.uniform(0.6, 1.0) for _ in range(channels - 1)]
    out = np.stack([g * wave + rng.normal(0, noise_level, len(t)) for g in gains], axis=1)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def render_audio(
    rng: np.random.Generator,
    *,
    pitch: int,
    num_symbols: int,
    sample_rate: int = 16000,
    channels: int = 1,
    container: str = "wav",
) -> bytes:
    """Encoded tone for pitch symbol ``pitch``: ``container`` "wav" (PCM_16) or "flac" (16 bit)."""
    if container not in ("wav", "flac"):
        raise ValueError(f"container must be 'wav' or 'flac', got {container!r}")
    frequency = float(pitch_frequencies(num_symbols)[pitch])
    wave = synthesize(rng, frequency=frequency, sample_rate=sample_rate, channels=channels)
    out = io.BytesIO()
    sf.write(out, wave, sample_rate, format=container.upper(), subtype="PCM_16")
    return out.getvalue()

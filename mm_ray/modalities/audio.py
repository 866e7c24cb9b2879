"""The ``audio`` modality: WAV/FLAC/OGG/MP3 members -> log-mel (or MFCC) ``[rows, frames]`` -> a 1-D CNN.

Settings: the ``audio`` config section (``AudioConfig``: rate, duration, mel/MFCC settings). Decoding:
``AudioPreprocessor`` (``mm_ray.modalities.audio_decode``). Train-time augmentation: a random gain and time shift
of the features (``train.augment``), and a random window of longer clips while decoding when training streams.
"""

from __future__ import annotations

from typing import Any

from mm_ray.config.schema import AudioConfig, AugmentConfig
from mm_ray.modalities.audio_decode import NAME, AudioPreprocessor
from mm_ray.modalities.spec import ColumnSpec, EncoderContext, ModalitySpec, PreprocessContext
from mm_ray.preprocess.mel import feature_rows
from mm_ray.quarantine import Reason


def audio_frames(settings: AudioConfig) -> int:
    """Frames of one clip's features (centred STFT: one more than the hops that fit)."""
    return 1 + int(settings.sample_rate * settings.duration_s) // settings.hop_length


def _shapes(settings: AudioConfig) -> dict[str, tuple[int, ...]]:
    rows = feature_rows(settings.features, settings.n_mels, settings.n_mfcc, settings.deltas)
    return {NAME: (rows, audio_frames(settings))}


def _preprocessor_kwargs(settings: AudioConfig, ctx: PreprocessContext) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "sample_rate": settings.sample_rate,
        "duration_s": settings.duration_s,
        "n_mels": settings.n_mels,
        "n_fft": settings.n_fft,
        "hop_length": settings.hop_length,
        "features": settings.features,
        "n_mfcc": settings.n_mfcc,
        "deltas": settings.deltas,
    }
    if ctx.augment is not None:
        kwargs["crop"] = "random"  # a random window of a longer clip, new every epoch
    return kwargs


def _encoder(ctx: EncoderContext) -> Any:
    # Imported here: the decoding actors import this module and never need torch.
    from mm_ray.encoders.builtin import AudioEncoder

    return AudioEncoder(n_mels=ctx.shapes[NAME][0], width=ctx.width, depth=ctx.depth, out_dim=ctx.out_dim)


def _augment(audio: Any, present: Any, generator: Any, augment: AugmentConfig, settings: AudioConfig) -> Any:
    """A random gain (dB) and a random time shift per clip; rows without audio unchanged."""
    import torch

    from mm_ray.preprocess.augment import add_gain, audio_gain_profile, keep_missing, time_shift, uniform

    n, rows, frames = audio.shape
    gains = uniform(generator, n, -augment.gain_db, augment.gain_db)
    limit = round(augment.time_shift * frames)
    shifts = torch.randint(-limit, limit + 1, (n,), generator=generator)
    # Log-mel rows all move by the gain; MFCC rows by the DCT's row sums (c_0 only), deltas not at all.
    profile = (
        torch.ones(rows)
        if settings.features == "log_mel"
        else torch.as_tensor(
            audio_gain_profile(settings.features, settings.n_mels, settings.n_mfcc, settings.deltas)
        )
    )
    out = add_gain(audio, gains.to(audio.device), profile.to(audio.device))
    out = time_shift(out, shifts.to(audio.device))
    return keep_missing(out, audio, present)


AUDIO = ModalitySpec(
    name=NAME,
    extensions=("wav", "flac", "ogg", "mp3"),
    settings_type=AudioConfig,
    columns=(ColumnSpec(NAME, "float32"),),
    shapes=_shapes,
    preprocessor=AudioPreprocessor,
    preprocessor_kwargs=_preprocessor_kwargs,
    encoder=_encoder,
    # Measured with the demo data (1 s FLAC/WAV at mixed rates): decode + resample + log-mel ~2 ms a sample.
    cost_share=0.475,
    pool_cpus=0.3,
    reasons=(Reason.CORRUPT_AUDIO.value, Reason.EMPTY_AUDIO.value),
    augment=_augment,
    # The CNN pools over time: a model takes clips of another length than it was trained on.
    variable_axes=((NAME, 1),),
    library={"transformers": "hf_audio"},
    description="WAV/FLAC/OGG/MP3 -> log-mel or MFCC [rows, frames]; 1-D CNN encoder (or an HF AST model)",
)

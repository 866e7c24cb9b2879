"""Audio preprocessing: encoded bytes (WAV, FLAC, OGG, MP3, ...) -> fixed-size log-mel spectrograms or MFCCs.

Use it as a callable class on numpy batches (a Ray Data actor pool calls it the same way)::

    pre = AudioPreprocessor(sample_rate=16000, duration_s=1.0, n_mels=64)
    batch = pre({"audio_bytes": np.array([flac_bytes, None], dtype=object)})
    batch["audio"]      # float32 [2, 64, 101]; row 1 is all zeros
    batch["has_audio"]  # [True, False]

or on one sample: ``pre.decode(flac_bytes)`` -> float32 ``[n_mels, frames]``; ``pre.load_waveform``
stops before the spectrogram. ``AudioPreprocessor(features="mfcc", n_mfcc=20, deltas=True)`` outputs
float32 ``[60, frames]`` instead (MFCCs with deltas and delta-deltas); ``pre.output_shape`` is the shape of
one clip's features either way. Both raise ``SampleError`` (``CORRUPT_AUDIO`` / ``EMPTY_AUDIO``).

Per sample: decode with libsndfile (``soundfile``) as float32, average the channels to mono,
resample with soxr, then keep exactly ``duration_s`` seconds: the start (or the centre, or a random window)
of longer clips, zeros appended to shorter ones. Only the part of the file that is kept is decoded and
resampled (plus a 20 ms margin so the resampling filter sees real signal at the cut), so a long
recording costs no more than a short one. Then, for the whole batch at once, a log-mel
spectrogram (see ``mm_ray.preprocess.mel`` for the exact conventions: Slaney mel scale with area
normalization, periodic Hann window, centred frames, ``log(mel + 1e-6)``), and for MFCCs its
orthonormal DCT-II plus regression deltas over +-2 frames.
"""

from __future__ import annotations

import io
import math
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from mm_ray.columns import REJECT, REJECT_DETAIL
from mm_ray.modalities.spec import presence_column, raw_column
from mm_ray.preprocess.batch import decode_rows, reject_columns
from mm_ray.preprocess.mel import (
    dct_matrix,
    feature_rows,
    hann_window,
    log_mel_spectrogram,
    mel_filterbank,
    mfcc_features,
    num_frames,
)
from mm_ray.quarantine import Reason, SampleError

NAME = "audio"
AUDIO = NAME
"""The model-ready column: float32 ``[feature rows, frames]`` (log-mel or MFCC)."""
AUDIO_BYTES, HAS_AUDIO = raw_column(NAME), presence_column(NAME)

CropMode = Literal["start", "center", "random"]
Features = Literal["log_mel", "mfcc"]

# Extra input read on each side of the kept window before resampling, so the resampler's filter
# runs over real signal at the cut rather than an artificial end of stream.
_RESAMPLE_MARGIN_S = 0.02


class AudioPreprocessor:
    """Decode audio to a mono ``sample_rate`` waveform of ``duration_s`` seconds, then log-mel (or MFCC).

    Args:
        sample_rate: rate every clip is resampled to (Hz).
        duration_s: seconds kept per clip; output frames = ``1 + round(duration_s * sample_rate) // hop_length``.
        n_mels, n_fft, hop_length, f_min, f_max: spectrogram settings (``f_max`` None = Nyquist).
        crop: which part of a longer clip is kept: ``"start"``, ``"center"`` or ``"random"`` (a window starting
            anywhere in the clip, drawn per clip: a training augmentation).
        seed: seed of the ``"random"`` windows' generator; None draws it from the OS, so an actor pool that is
            made anew every epoch draws new windows every epoch.
        resample_quality: soxr quality, ``"HQ"`` (default), ``"VHQ"``, ``"MQ"``, ``"LQ"`` or ``"QQ"``.
        features: ``"log_mel"`` (``[n_mels, frames]``) or ``"mfcc"`` (``[n_mfcc, frames]``, x3 rows with deltas).
        n_mfcc, deltas: MFCC coefficients kept, and whether deltas and delta-deltas are appended (mfcc only).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        duration_s: float = 1.0,
        n_mels: int = 64,
        n_fft: int = 400,
        hop_length: int = 160,
        f_min: float = 0.0,
        f_max: float | None = None,
        crop: CropMode = "start",
        resample_quality: str = "HQ",
        features: Features = "log_mel",
        n_mfcc: int = 20,
        deltas: bool = True,
        seed: int | None = None,
    ):
        if crop not in ("start", "center", "random"):
            raise ValueError(f"crop must be 'start', 'center' or 'random', got {crop!r}")
        self._rng = np.random.default_rng(seed)
        self.num_samples = round(duration_s * sample_rate)
        if self.num_samples <= n_fft // 2:
            # Reflect padding of a centred STFT needs more samples than half a window.
            raise ValueError(f"duration_s={duration_s} is shorter than half a window (n_fft={n_fft})")
        self.sample_rate = sample_rate
        self.crop = crop
        self.resample_quality = resample_quality
        self.hop_length = hop_length
        self.window = hann_window(n_fft)
        self.filterbank = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        rows = feature_rows(features, n_mels, n_mfcc, deltas)
        self.features = features
        self.deltas = deltas
        self.dct = dct_matrix(n_mfcc, n_mels) if features == "mfcc" else None
        self.output_shape = (rows, num_frames(self.num_samples, n_fft, hop_length))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replace ``audio_bytes`` with ``audio`` (float32 [N, *output_shape]) and ``has_audio``."""
        raw = batch.pop(AUDIO_BYTES)
        n = len(raw)
        reject, detail = reject_columns(batch, n)
        waves = np.zeros((n, self.num_samples), dtype=np.float32)
        has = decode_rows(raw, reject, detail, lambda i, data: self._load_into(data, waves[i]))
        features = np.zeros((n, *self.output_shape), dtype=np.float32)
        if has.any():
            # Only decoded rows: log(0 + eps) is not zero, and missing rows must be all zeros.
            features[has] = self.transform(waves[has])
        batch[AUDIO] = features
        batch[HAS_AUDIO] = has
        batch[REJECT] = reject
        batch[REJECT_DETAIL] = detail
        return batch

    def decode(self, data: bytes) -> np.ndarray:
        """One encoded clip -> float32 ``output_shape`` features (log-mel spectrogram or MFCCs)."""
        return self.transform(self.load_waveform(data)[None])[0]

    def load_waveform(self, data: bytes) -> np.ndarray:
        """One encoded clip -> mono float32 ``[num_samples]`` at ``sample_rate``, cropped or padded."""
        out = np.zeros(self.num_samples, dtype=np.float32)
        self._load_into(data, out)
        return out

    def log_mel(self, waves: np.ndarray) -> np.ndarray:
        """float32 ``[B, num_samples]`` -> float32 ``[B, n_mels, frames]``."""
        return log_mel_spectrogram(waves, self.window, self.filterbank, self.hop_length)

    def transform(self, waves: np.ndarray) -> np.ndarray:
        """float32 ``[B, num_samples]`` -> float32 ``[B, *output_shape]``: the configured features."""
        log_mels = self.log_mel(waves)
        if self.dct is None:
            return log_mels
        return mfcc_features(log_mels, self.dct, self.deltas)

    def _load_into(self, data: bytes, out: np.ndarray) -> None:
        if len(data) == 0:
            raise SampleError(Reason.EMPTY_AUDIO, "0-byte audio member")
        try:
            mono, rate, skip = self._read_window(data)
        except Exception as err:  # libsndfile reports bad input as LibsndfileError/RuntimeError
            # error_string is libsndfile's own message, without the object repr that str(err) carries.
            message = getattr(err, "error_string", None) or str(err)
            raise SampleError(Reason.CORRUPT_AUDIO, f"{type(err).__name__}: {message}") from None
        if mono.shape[0] == 0:
            raise SampleError(Reason.EMPTY_AUDIO, "decoded to 0 frames")
        if not np.isfinite(mono).all():
            raise SampleError(Reason.CORRUPT_AUDIO, "non-finite samples (NaN or inf)")
        if rate != self.sample_rate:
            mono = soxr.resample(mono, rate, self.sample_rate, quality=self.resample_quality)
            skip = round(skip * self.sample_rate / rate)
        kept = mono[skip : skip + self.num_samples]
        out[: kept.shape[0]] = kept

    def _read_window(self, data: bytes) -> tuple[np.ndarray, int, int]:
        """Decode only the input frames needed for the kept window (plus the resampling margin).

        Returns the mono signal, its sample rate and how many of its leading frames come before
        the kept window (the margin read in front of it).
        """
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, total = f.samplerate, f.frames
            needed = math.ceil(self.num_samples * rate / self.sample_rate)
            margin = 0 if rate == self.sample_rate else math.ceil(_RESAMPLE_MARGIN_S * rate)
            start = 0
            if total > needed and self.crop == "center":
                start = (total - needed) // 2
            elif total > needed and self.crop == "random":
                start = int(self._rng.integers(0, total - needed + 1))
            first = max(0, start - margin)
            if first:
                f.seek(first)
            frames = f.read(start - first + needed + margin, dtype="float32", always_2d=True)
        mono = np.ascontiguousarray(frames[:, 0]) if frames.shape[1] == 1 else frames.mean(axis=1)
        return mono, rate, start - first

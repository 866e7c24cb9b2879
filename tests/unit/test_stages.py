"""The actor-pool stage wrappers, run in-process on Arrow blocks from the real reader (no Ray cluster)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from ray.data.block import BlockAccessor
from shardkit import good_sample, write_samples

from mm_ray import columns as C
from mm_ray.data.datasource import raw_schema, read_shard_blocks
from mm_ray.data.members import MemberMap
from mm_ray.data.stages import FusedStage, ModalityStage, drop_rejected, stage_class
from mm_ray.modalities import BUILTIN
from mm_ray.preprocess.tokenizer import train_tokenizer

IMAGE, TEXT, AUDIO = BUILTIN["image"], BUILTIN["text"], BUILTIN["audio"]


def stage(spec, **kwargs) -> ModalityStage:
    return stage_class(spec)(spec=spec, kwargs=kwargs)


def _raw_block(tmp_path) -> pa.Table:
    samples = {f"k{i}": good_sample(i) for i in range(4)}
    samples["k1"]["jpg"] = b"not a jpeg at all"
    samples["k2"]["txt"] = b"caf\xe9 \xff"  # not UTF-8
    del samples["k3"]["wav"]  # missing modality: kept with a presence mask
    path = write_samples(tmp_path / "s.tar", samples)
    blocks = list(read_shard_blocks(str(path), MemberMap(), None, {}, rows_per_block=64))
    assert len(blocks) == 1 and blocks[0].schema == raw_schema(("image", "text", "audio"))
    assert blocks[0].schema.names == [
        "__key__", "__shard__", "image_bytes", "text_bytes", "audio_bytes", "label",
        "has_image", "has_text", "has_audio",
    ]  # fmt: skip
    return blocks[0]


def test_stages_convert_their_column_pass_the_rest_and_drop_rejects(tmp_path) -> None:
    table = _raw_block(tmp_path)
    tokenizer = train_tokenizer(["a red bus by the river", "an old green bridge"], vocab_size=64).to_str()
    table = stage(TEXT, tokenizer=tokenizer, max_length=8)(table)
    assert table.column(C.KEY).to_pylist() == ["k0", "k1", "k3"]  # k2 rejected for its text
    assert "text_bytes" not in table.column_names
    assert table.column("image_bytes").to_pylist()[1] == b"not a jpeg at all"  # untouched pass-through
    table = stage(AUDIO, sample_rate=8000, duration_s=0.25, n_mels=16, n_fft=256, hop_length=128)(table)
    table = stage(IMAGE, size=16)(table)
    assert table.column(C.KEY).to_pylist() == ["k0", "k3"]  # k1 rejected for its image
    batch = BlockAccessor.for_block(table).to_batch_format("numpy")  # what consumers of the stream get
    assert batch["image"].shape == (2, 3, 16, 16) and batch["image"].dtype == np.uint8
    assert batch["input_ids"].shape == (2, 8) and batch["input_ids"].dtype == np.int32
    assert batch["audio"].shape == (2, 16, 1 + 2000 // 128) and batch["audio"].dtype == np.float32
    assert batch["has_audio"].tolist() == [True, False]
    assert not batch["audio"][1].any()  # the missing clip is all zeros
    assert not {C.REJECT, C.REJECT_DETAIL, "image_bytes", "audio_bytes"} & set(table.column_names)


def test_drop_rejected_returns_records_naming_shard_and_key() -> None:
    batch = {
        C.KEY: np.array(["a", "b", "c"], dtype=object),
        C.SHARD: np.array(["s.tar"] * 3, dtype=object),
        C.LABEL: np.array([0, 1, 2]),
        C.REJECT: np.array(["", "corrupt_image", ""], dtype=object),
        C.REJECT_DETAIL: np.array(["", "cannot identify image", ""], dtype=object),
    }
    good, records = drop_rejected(batch)
    assert good[C.KEY].tolist() == ["a", "c"] and good[C.LABEL].tolist() == [0, 2]
    assert records == [
        {"shard": "s.tar", "key": "b", "reason": "corrupt_image", "detail": "cannot identify image"}
    ]
    assert C.REJECT not in good


def test_audio_sample_rate_from_the_config_reaches_the_audio_stage(tmp_path) -> None:
    """``audio.sample_rate`` is the rate clips are resampled to, whatever the file's own rate."""
    import io

    import soundfile as sf

    from mm_ray.config.load import load_config
    from mm_ray.data.pipeline import preprocessor_kwargs
    from mm_ray.modalities.audio_decode import AudioPreprocessor

    settings = ["audio.sample_rate=8000", "audio.duration_s=0.5", "audio.hop_length=128", "audio.n_fft=256"]
    kwargs = preprocessor_kwargs(load_config(None, settings), tokenizer_json="")["audio"]
    # A 22.05 kHz clip: a 1 kHz tone (below 8 kHz's Nyquist) plus a 5 kHz one (above it, must be filtered).
    t = np.arange(22050) / 22050
    wave = 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 5000 * t)
    clip = io.BytesIO()
    sf.write(clip, wave.astype(np.float32), 22050, format="WAV", subtype="FLOAT")
    samples = {"k0": {**good_sample(0), "wav": clip.getvalue()}}
    raw = next(read_shard_blocks(str(write_samples(tmp_path / "a.tar", samples)), MemberMap(), None, {}, 64))
    table = stage(AUDIO, **kwargs)(raw)
    # 0.5 s at 8 kHz = 4,000 samples -> 1 + 4000 // 128 centred frames (16 kHz would give 63).
    audio = BlockAccessor.for_block(table).to_batch_format("numpy")["audio"]
    assert audio.shape[0] == 1 and audio.shape[-1] == 1 + 4000 // 128
    waveform = AudioPreprocessor(**kwargs).load_waveform(clip.getvalue())
    assert waveform.shape == (4000,)
    spectrum = np.abs(np.fft.rfft(waveform))
    freqs = np.fft.rfftfreq(4000, d=1 / 8000)
    assert freqs[spectrum.argmax()] == 1000.0
    # Resampled properly, the 5 kHz tone is filtered out; sampled at 8 kHz without a filter it would fold
    # to 3 kHz.
    assert spectrum[np.abs(freqs - 3000) < 50].max() < 0.01 * spectrum.max()


def test_a_fused_stage_runs_each_modality_in_turn_under_its_own_name(tmp_path) -> None:
    table = _raw_block(tmp_path)
    tokenizer = train_tokenizer(["a red bus by the river", "an old green bridge"], vocab_size=64).to_str()
    stages = ((TEXT, {"tokenizer": tokenizer, "max_length": 8}), (IMAGE, {"size": 16}))
    out = FusedStage(stages=stages)(table)
    assert out.column(C.KEY).to_pylist() == ["k0", "k3"]  # k2 (text) and k1 (image) rejected in turn
    assert "audio_bytes" in out.column_names  # not a stage of this actor: passed through
    # Ray Data names a pool after its class: each modality's pool shows under the modality's name.
    assert [stage_class(s).__name__ for s in (IMAGE, TEXT, AUDIO)] == [
        "ImageStage",
        "TextStage",
        "AudioStage",
    ]

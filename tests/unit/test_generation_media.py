"""What ``mm-ray generate`` writes and how ``bench generate`` judges it: Griffin-Lim keeps a tone's pitch, the
colour reader reads real demo images back, the pairwise distance, and a checkpoint that cannot generate."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mm_ray.bench.topics import colour_topics, pairwise_distance
from mm_ray.config.load import load_config
from mm_ray.demo.render_image import make_noise_bank, render_image
from mm_ray.generation.media import griffin_lim, image_grid, image_png, mel_png, wav_bytes
from mm_ray.generation.run import check_can_generate
from mm_ray.modalities.audio_decode import AudioPreprocessor
from mm_ray.modalities.image_decode import ImagePreprocessor
from mm_ray.train.checkpoint import CheckpointError, LoadedCheckpoint
from mm_ray.train.spec import LoopConfig


def test_griffin_lim_keeps_the_pitch_of_a_tone(tmp_path) -> None:
    pre = AudioPreprocessor(sample_rate=16000, duration_s=0.5, n_mels=32)
    t = np.arange(pre.num_samples) / 16000
    for frequency in (440.0, 1500.0):
        log_mel = pre.log_mel((0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)[None])[0]
        wave = griffin_lim(log_mel, pre, iterations=16)
        assert wave.shape == (pre.num_samples,) and np.abs(wave).max() <= 0.9 + 1e-6
        # The rebuilt wave's strongest frequency (an FFT, independent of the mel code) is the tone's.
        spectrum = np.abs(np.fft.rfft(wave))
        peak = np.fft.rfftfreq(len(wave), 1 / 16000)[spectrum.argmax()]
        assert abs(peak - frequency) < 0.06 * frequency
    decoded, rate = sf.read(io.BytesIO(wav_bytes(wave, 16000)))
    assert rate == 16000 and len(decoded) == pre.num_samples
    assert Image.open(io.BytesIO(mel_png(log_mel, title="tone", hop_seconds=0.01))).format == "PNG"


def test_griffin_lim_refuses_mfccs() -> None:
    pre = AudioPreprocessor(duration_s=0.5, features="mfcc")
    with pytest.raises(ValueError, match="log-mel"):
        griffin_lim(np.zeros(pre.output_shape), pre)


def test_colour_reader_reads_rendered_demo_images_back() -> None:
    rng = np.random.default_rng(0)
    bank = make_noise_bank(rng, max_side=96)
    pre = ImagePreprocessor(size=32)
    images, colours = [], []
    for colour, shape in itertools.product(range(8), range(8)):
        data = render_image(
            rng, color=colour, shape=shape, size=(int(rng.integers(48, 97)), 64), noise_bank=bank
        )
        images.append(pre.decode(data))
        colours.append(colour)
    images = np.stack(images)
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
    np.testing.assert_array_equal(colour_topics(images, 8), colours)
    # The same images as floats in [0, 1] (what the generators output).
    np.testing.assert_array_equal(colour_topics(images / 255.0, 8), colours)


def test_pairwise_distance_is_the_mean_rms_difference_over_pairs() -> None:
    samples = np.random.default_rng(1).random((4, 3, 5, 5))
    pairs = [np.sqrt(np.mean((a - b) ** 2)) for a, b in itertools.combinations(samples, 2)]
    assert pairwise_distance(samples) == pytest.approx(np.mean(pairs))
    assert pairwise_distance(np.repeat(samples[:1], 3, axis=0)) == pytest.approx(0.0, abs=1e-6)


def test_png_writers_round_trip() -> None:
    pixels = np.random.default_rng(2).random((3, 6, 6)).astype(np.float32)
    back = np.asarray(Image.open(io.BytesIO(image_png(pixels)))).transpose(2, 0, 1)
    np.testing.assert_array_equal(back, np.rint(pixels * 255).astype(np.uint8))
    grid = Image.open(io.BytesIO(image_grid(np.stack([np.stack([pixels] * 3)] * 2))))
    assert grid.size == (3 * 8 + 2, 2 * 8 + 2)


def _checkpoint(preset: str, modalities: list[str]) -> LoadedCheckpoint:
    cfg = load_config(None, [f"model.preset={preset}", f"model.modalities=[{','.join(modalities)}]",
                             "model.width=8", "model.depth=1", "model.fusion_dim=8"])  # fmt: skip
    loop = LoopConfig.for_run(
        cfg, shapes={"image": [3, 16, 16], "input_ids": [4], "audio": [8, 11]}, vocab_size=10, num_classes=4,
        rows=10, has_val=False,
    )  # fmt: skip
    model = loop.model.build()
    return LoadedCheckpoint(directory=__import__("pathlib").Path("ckpt"), state={"config": loop.to_state(),
                            "model": model.state_dict(), "epoch": 1}, tokenizer_json="{}")  # fmt: skip


def test_only_generative_checkpoints_generate() -> None:
    with pytest.raises(CheckpointError, match="'late_concat' cannot generate; train a generative preset"):
        check_can_generate(_checkpoint("late_concat", ["image", "text"]), ("text",), "image")
    with pytest.raises(
        CheckpointError, match="cannot generate audio from text; it generates: image from text"
    ):
        check_can_generate(_checkpoint("cgan", ["image", "text"]), ("text",), "audio")
    mvae = _checkpoint("mvae", ["image", "text", "audio"])
    check_can_generate(mvae, ("text",), "audio")
    check_can_generate(mvae, ("text", "image"), "image")
    # The checkpoint's spec carries the audio frames its decoder was built for.
    assert mvae.restore_model().decoders["audio"](torch.zeros(1, 8)).shape == (1, 8, 11)


def test_bench_generate_refuses_an_unknown_preset_before_making_data(tmp_path) -> None:
    from mm_ray.bench.generation import bench_generation

    with pytest.raises(ValueError, match="presets must name some of"):
        bench_generation(load_config("pipelines/generate.yaml"), tmp_path, presets=("gan",))
    assert not any(tmp_path.iterdir())

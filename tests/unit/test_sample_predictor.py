"""The plain core of ``mm-ray serve`` (no Ray): an export scores samples' member bytes exactly as the checkpoint
scores the same samples read from their shard, and a sample the pipeline would quarantine is answered alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("safetensors", reason="export needs the [export] extra (safetensors)")

from scoring_kit import reference_predictions, write_checkpoint
from shardkit import good_sample, read_tar_samples, write_samples

from mm_ray.inference.export import export
from mm_ray.inference.samples import SamplePredictor

SMALL = ("image.size=32", "audio.duration_s=0.25", "audio.n_mels=16", "text.max_length=16", "model.preset=gated",
         "model.width=8", "model.depth=1", "model.fusion_dim=8")  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[SamplePredictor, str, Path]:
    root = tmp_path_factory.mktemp("samples")
    shard = str(write_samples(root / "s.tar", {f"k{i}": good_sample(i) for i in range(6)}))
    ckpt = write_checkpoint(root / "ckpt", [shard], SMALL)
    export(ckpt, root / "export")
    return SamplePredictor.open(root / "export"), shard, ckpt


def test_samples_get_the_checkpoints_predictions(served) -> None:
    predictor, shard, ckpt = served
    samples = read_tar_samples(shard)
    expected = reference_predictions(ckpt, [shard])
    answers = predictor.predict([samples[k] for k in sorted(samples)])
    for key, answer in zip(sorted(samples), answers, strict=True):
        np.testing.assert_allclose(answer["probabilities"], expected[key], atol=1e-5)
        assert answer["predicted"] == int(np.argmax(expected[key]))
        assert set(answer["present"].values()) == {True}


def test_a_bad_sample_is_answered_alone_and_a_missing_modality_is_scored(served) -> None:
    predictor, shard, _ = served
    good = read_tar_samples(shard)["k1"]
    without_audio = {ext: data for ext, data in good.items() if ext != "wav"}
    corrupt = {**good, "jpg": b"\xff\xd8" + bytes(range(256)) * 3}
    answers = predictor.predict([good, corrupt, {"xyz": b"?"}, without_audio])
    assert answers[1]["error"] == "corrupt_image" and answers[2]["error"] == "no_known_members"
    assert answers[0]["present"] == {"image": True, "text": True, "audio": True}
    assert answers[3]["present"] == {"image": True, "text": True, "audio": False}
    # Scored without its audio: the model's "missing" embedding takes its place, so the answer differs.
    assert not np.allclose(answers[3]["probabilities"], answers[0]["probabilities"])
    alone = predictor.predict([good])[0]  # the batch a bad sample came with is scored as usual
    np.testing.assert_allclose(alone["probabilities"], answers[0]["probabilities"], atol=1e-6)

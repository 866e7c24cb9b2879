"""The Ray ingest pipeline end to end on demo shards: every sample once, exact columns, the cache.

Ground truth is read from the same tar files with ``tarfile`` alone (``shardkit.read_tar_samples``),
and each model-ready column is compared with the plain preprocessor applied to that sample's bytes,
so a row mix-up, a lost sample or a setting that did not reach its actor pool all fail here.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from shardkit import caption_of, good_sample, label_of, read_tar_samples, write_samples
from tokenizers import Tokenizer

from mm_ray import columns as C
from mm_ray.config.load import load_config
from mm_ray.data.build import build_cache
from mm_ray.data.cache import Cache
from mm_ray.demo.dataset import make_shards
from mm_ray.modalities.audio_decode import AudioPreprocessor
from mm_ray.modalities.image_decode import ImagePreprocessor
from mm_ray.modalities.text_decode import TextPreprocessor

from .conftest import AUDIO_FRAMES, IMAGE_SIZE, MAX_LENGTH, N_MELS, SMALL, Run

pytestmark = pytest.mark.integration

OUTPUT_COLUMNS = {
    C.KEY, C.SHARD, C.LABEL, "image", "input_ids", "attention_mask", "audio",
    "has_image", "has_text", "has_audio",
}  # fmt: skip


@pytest.fixture(scope="module")
def truth(demo_shards) -> dict[str, dict[str, bytes]]:
    """Every sample of the demo shards, read with ``tarfile`` only."""
    root, manifest = demo_shards
    samples: dict[str, dict[str, bytes]] = {}
    for name in manifest["shard_counts"]:
        samples |= read_tar_samples(root / name)
    assert len(samples) == 48
    return samples


@pytest.fixture(scope="module")
def streamed(run_ingest, demo_shards) -> Run:
    # A pool per modality (the layout for pools with different resources): the default layout, which fuses
    # uniform CPU stages into one pool, is what tests/integration/test_bad_input.py and the training tests run.
    return run_ingest([str(demo_shards[0])], "pools.layout=per_modality")


def test_every_key_comes_out_exactly_once_with_its_label(streamed: Run, truth) -> None:
    assert len(streamed.keys) == len(truth)
    assert set(streamed.keys) == set(truth)
    labels = dict(zip(streamed.keys, streamed.columns[C.LABEL].tolist(), strict=True))
    assert labels == {key: label_of(members) for key, members in truth.items()}


def test_columns_have_exact_dtypes_and_shapes(streamed: Run, truth) -> None:
    cols, n = streamed.columns, len(truth)
    assert set(cols) == OUTPUT_COLUMNS  # raw bytes and reject columns never leave the pipeline
    expected = {
        "image": (np.uint8, (n, 3, IMAGE_SIZE, IMAGE_SIZE)),
        "input_ids": (np.int32, (n, MAX_LENGTH)),
        "attention_mask": (np.int8, (n, MAX_LENGTH)),
        "audio": (np.float32, (n, N_MELS, AUDIO_FRAMES)),
        C.LABEL: (np.int64, (n,)),
    }
    for name, (dtype, shape) in expected.items():
        assert (cols[name].dtype, cols[name].shape) == (np.dtype(dtype), shape), name
    for name in ("has_image", "has_text", "has_audio"):
        assert cols[name].dtype == np.bool_ and cols[name].all(), name
    shards = {Path(str(s)).name for s in cols[C.SHARD]}
    assert shards == {f"{split}-{i:06d}.tar" for split, i in [("train", 0), ("train", 1), ("train", 2),
                                                              ("train", 3), ("val", 0)]}  # fmt: skip


def test_each_row_holds_its_own_samples_preprocessed(streamed: Run, truth) -> None:
    """Row-by-row equality with the plain preprocessors: the right bytes reached the right settings."""
    images = ImagePreprocessor(size=IMAGE_SIZE)
    audio = AudioPreprocessor(sample_rate=16000, duration_s=0.5, n_mels=N_MELS)
    text = TextPreprocessor(streamed.tokenizer_json, max_length=MAX_LENGTH)
    for key, members in truth.items():
        row = streamed.row(key)
        image = next(members[ext] for ext in ("jpg", "png") if ext in members)
        sound = next(members[ext] for ext in ("wav", "flac") if ext in members)
        np.testing.assert_array_equal(row["image"], images.decode(image))
        np.testing.assert_allclose(row["audio"], audio.decode(sound), rtol=1e-5, atol=1e-5)
        ids, mask = text.decode(caption_of(members).encode("utf-8"))
        np.testing.assert_array_equal(row["input_ids"], ids)
        np.testing.assert_array_equal(row["attention_mask"], mask)
        assert row["image"].any() and np.isfinite(row["audio"]).all()


def test_summary_counts_every_sample_and_nothing_quarantined(streamed: Run, tmp_path: Path) -> None:
    summary = streamed.ingest.summary()
    assert summary["samples_read"] == 48
    assert summary["samples_quarantined"] == 0 and summary["quarantine_reasons"] == {}
    assert summary["shards_done"] == 5
    final = streamed.ingest.finish(quarantine_log=tmp_path / "q.jsonl")
    assert final["samples_ok"] == 48 and final["shards"] == 5
    assert (tmp_path / "q.jsonl").read_text() == ""


def test_each_modality_runs_in_its_own_actor_pool(streamed: Run) -> None:
    stats = streamed.ingest.dataset.stats()
    for stage in ("TextStage", "AudioStage", "ImageStage"):
        # "Operator N MapBatches(X):" on its own: a fused "A->MapBatches(X)" operator does not match.
        assert re.search(rf"^Operator \d+ MapBatches\({stage}\):", stats, re.MULTILINE), stats


def test_preprocess_writes_a_cache_made_with_its_tokenizer(demo_shards, truth, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    cfg = load_config(None, list(SMALL))
    cache = build_cache(cfg, [str(demo_shards[0])], str(out))
    manifest = cache.manifest
    rows = cache.dataset().take_all()
    assert sorted(r[C.KEY] for r in rows) == sorted(truth)
    assert {r[C.KEY]: r[C.LABEL] for r in rows} == {k: label_of(m) for k, m in truth.items()}
    assert manifest.samples_ok == 48 and manifest.samples_quarantined == 0
    assert re.fullmatch(r"[0-9a-f]{16}", manifest.config_hash)
    assert cache.uri == str(out) and cache.tokenizer_json == (out / "tokenizer.json").read_text()
    assert manifest.shapes["audio"] == (N_MELS, AUDIO_FRAMES)
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["shapes"]["audio"] == [N_MELS, AUDIO_FRAMES] and saved["samples_ok"] == 48
    assert Cache.open(str(out)).manifest == manifest
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    for row in rows:
        ids = np.asarray(row["input_ids"])
        assert ids.dtype == np.int32 and ids.shape == (MAX_LENGTH,)
        # Demo captions are plain ASCII words and punctuation: decoding gives the lower-cased caption.
        caption = caption_of(truth[row[C.KEY]])
        assert tokenizer.decode(ids.tolist()) == caption.lower(), (row[C.KEY], caption, ids.tolist())
    assert (out / "quarantine.jsonl").read_text() == ""


@pytest.fixture(scope="module")
def partial_audio_shards(tmp_path_factory) -> tuple[list[str], set[str], set[str]]:
    """One shard whose samples have no audio member and one with complete samples."""
    root = tmp_path_factory.mktemp("partial_audio")
    silent = {f"silent{i}": {k: v for k, v in good_sample(i).items() if k != "wav"} for i in range(4)}
    full = {f"full{i}": good_sample(10 + i) for i in range(3)}
    write_samples(root / "silent-000000.tar", silent)
    write_samples(root / "full-000000.tar", full)
    return [str(root)], set(silent), set(full)


def test_missing_audio_is_kept_with_presence_mask_and_zeros(run_ingest, partial_audio_shards) -> None:
    specs, silent, full = partial_audio_shards
    run = run_ingest(specs)
    assert set(run.keys) == silent | full
    for key in run.keys:
        row = run.row(key)
        assert row["has_audio"] == (key in full)
        assert row["audio"].any() == (key in full)  # a missing clip is all zeros, not log(eps)
        assert row["has_image"] and row["has_text"]
    assert run.ingest.finish()["samples_quarantined"] == 0


def test_required_audio_quarantines_samples_without_it(run_ingest, partial_audio_shards, tmp_path) -> None:
    specs, silent, full = partial_audio_shards
    run = run_ingest(specs, "data.required_modalities=[audio]", "data.error_budget=1.0")
    assert set(run.keys) == full
    summary = run.ingest.finish(quarantine_log=tmp_path / "q.jsonl")
    assert summary["quarantine_reasons"] == {"missing_required_modality": len(silent)}
    records = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert {(r["key"], r["reason"]) for r in records} == {(k, "missing_required_modality") for k in silent}
    assert all(Path(r["shard"]).name == "silent-000000.tar" for r in records)


def test_features_vectors_go_through_their_own_pool_exactly(run_ingest, tmp_path_factory) -> None:
    """The benchmark's features variant: each row's ``features`` column is its own ``.npy`` member, read back
    with numpy from the tar file, after the features actor pool."""
    root = tmp_path_factory.mktemp("features_shards")
    make_shards(root, num_samples=12, samples_per_shard=6, val_fraction=0.0, image_size=(24, 32), features_dim=6,
                workers=1)  # fmt: skip
    truth = read_tar_samples(root / "train-000000.tar") | read_tar_samples(root / "train-000001.tar")
    run = run_ingest(
        [str(root)],
        "pools.layout=per_modality",
        "data.modalities=[image,text,audio,features]",
        "features.shape=[6]",
        # Four pools of one 0.25-CPU actor each: what 2 CPUs hold beside the read tasks.
        *(
            f"pools.{m}.{k}"
            for m in ("image", "text", "audio", "features")
            for k in ("num_cpus=0.25", "min_size=1", "max_size=1")
        ),
    )
    assert sorted(run.keys) == sorted(truth)
    features = run.columns["features"]
    assert features.dtype == np.float32 and features.shape == (12, 6) and run.columns["has_features"].all()
    for key, row in zip(run.keys, features, strict=True):
        np.testing.assert_array_equal(row, np.load(io.BytesIO(truth[key]["npy"]), allow_pickle=False))
    assert re.search(r"^Operator \d+ MapBatches\(FeaturesStage\):", run.ingest.dataset.stats(), re.MULTILINE)

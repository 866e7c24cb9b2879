"""Generated shards are real webdataset tars, deterministic, and agree with their manifest and latents."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds
from PIL import Image

from mm_ray.config.schema import DemoConfig
from mm_ray.demo.dataset import load_manifest, make_shards, plan_splits, reuse_or_write, shard_paths
from mm_ray.demo.latents import label_rule
from mm_ray.demo.render_audio import pitch_frequencies
from mm_ray.demo.render_features import basis
from mm_ray.demo.render_image import PALETTE
from mm_ray.demo.render_text import TOPIC_WORDS
from mm_ray.demo.shards import TAR_MTIME, shard_latents

ARGS = {"num_samples": 40, "samples_per_shard": 16, "val_fraction": 0.25, "seed": 7}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    progress = []
    manifest = make_shards(
        out, workers=1, progress=lambda done, total: progress.append((done, total)), **ARGS
    )
    return out, manifest, progress


def digests(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.tar"))}


def test_plan_splits():
    assert plan_splits(40, 16, 0.25) == {"train": [16, 14], "val": [10]}
    assert plan_splits(5, 10, 0.0) == {"train": [5], "val": []}
    with pytest.raises(ValueError):
        plan_splits(10, 5, 1.0)


def test_manifest_counts_files_and_progress(dataset):
    out, manifest, progress = dataset
    assert manifest == load_manifest(out) == load_manifest(out / "dataset.json")
    assert manifest["counts"] == {"total": 40, "train": 30, "val": 10}
    assert manifest["shards"] == {
        "train": ["train-000000.tar", "train-000001.tar"],
        "val": ["val-000000.tar"],
    }
    assert manifest["shard_counts"] == {"train-000000.tar": 16, "train-000001.tar": 14, "val-000000.tar": 10}
    assert shard_paths(out, "val") == [str(out / "val-000000.tar")]
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", *sorted(manifest["shard_counts"])]
    assert [done for done, _ in progress] == [16, 30, 40] and {t for _, t in progress} == {40}
    caps = manifest["caps"]
    assert set(caps) == {
        "image",
        "audio",
        "text",
        "image+audio",
        "image+text",
        "text+audio",
        "image+text+audio",
    }
    assert manifest["bayes_accuracy"] == caps["image+text+audio"] > manifest["additive_fusion"]
    assert manifest["chance_accuracy"] == pytest.approx(0.25)
    assert "label = (shape + pitch) mod 4" in manifest["label_rule"]


def test_tar_members_are_plain_and_reproducible(dataset):
    out, manifest, _ = dataset
    keys = []
    for name in manifest["shard_counts"]:
        with tarfile.open(out / name) as tar:
            members = tar.getmembers()
        assert all(m.isfile() and m.mtime == TAR_MTIME for m in members)
        by_key = Counter(m.name.split(".", 1)[0] for m in members)
        assert set(by_key.values()) == {4}
        assert len(by_key) == manifest["shard_counts"][name]
        exts = Counter(m.name.split(".", 1)[1] for m in members)
        assert exts["cls"] == len(by_key)
        assert (
            exts["jpg"] + exts["png"]
            == exts["wav"] + exts["flac"]
            == exts["txt"] + exts["json"]
            == len(by_key)
        )
        keys += list(by_key)
    assert len(set(keys)) == 40 and not any("." in k for k in keys)


def read_samples(out, manifest, split):
    dataset = wds.WebDataset(shard_paths(out, split), shardshuffle=False, empty_check=False)
    return list(dataset)


def decode(sample):
    image_ext = "jpg" if "jpg" in sample else "png"
    image = Image.open(io.BytesIO(sample[image_ext]))
    image.load()
    audio_ext = "wav" if "wav" in sample else "flac"
    wave, rate = sf.read(io.BytesIO(sample[audio_ext]), always_2d=True)
    if "txt" in sample:
        text = sample["txt"].decode("utf-8")
    else:
        record = json.loads(sample["json"].decode("utf-8"))
        assert set(record) == {"caption", "source"}  # no label or latents leak into the json
        text = record["caption"]
    return image_ext, image, audio_ext, wave, rate, text, int(sample["cls"].decode("ascii"))


@pytest.mark.parametrize("split", ["train", "val"])
def test_samples_decode_and_match_their_latents(dataset, split):
    out, manifest, _ = dataset
    samples = read_samples(out, manifest, split)
    assert len(samples) == manifest["counts"][split]
    mix = Counter()
    freqs = pitch_frequencies(4)
    for shard_index, shard in enumerate(manifest["shards"][split]):
        count = manifest["shard_counts"][shard]
        lat = shard_latents(seed=7, split=split, shard_index=shard_index, num_samples=count, num_symbols=4,
                            corruption=manifest["corruption"])  # fmt: skip
        assert (lat.label == label_rule(lat.topic, lat.shape, lat.pitch, 4)).all()
        for i, sample in enumerate(
            s for s in samples if s["__key__"].startswith(f"{split}{shard_index:06d}_")
        ):
            assert sample["__key__"] == f"{split}{shard_index:06d}_{i:06d}"
            image_ext, image, audio_ext, wave, rate, text, label = decode(sample)
            assert label == lat.label[i]
            obs = {name: int(v[i]) for name, v in lat.observed.items()}
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
            border = np.median(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]), axis=0)
            assert np.abs(border - PALETTE[obs["image_color"]][1]).max() < 25
            assert min(image.size) >= 256 and max(image.size) <= 512
            spectrum = np.abs(np.fft.rfft(wave.mean(axis=1)))
            peak = np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()]
            assert peak == pytest.approx(freqs[obs["audio_pitch"]], rel=0.025)
            assert any(w in text.lower() for w in TOPIC_WORDS[obs["text_topic"]])
            mix.update([image_ext, audio_ext, "txt" if "txt" in sample else "json", f"sr{rate}",
                        f"ch{wave.shape[1]}"])  # fmt: skip
    if split == "train":  # 30 samples are enough for every format to show up with this seed
        assert {"jpg", "png", "wav", "flac", "txt", "json", "ch1", "ch2"} <= set(mix)
        assert len([k for k in mix if k.startswith("sr")]) >= 4


def test_manifest_format_mix_counts_what_is_in_the_tars(dataset):
    out, manifest, _ = dataset
    samples = read_samples(out, manifest, "train") + read_samples(out, manifest, "val")
    mix = manifest["format_mix"]
    for group, names in [("image", ("jpg", "png")), ("audio", ("wav", "flac")), ("text", ("txt", "json"))]:
        assert mix[group] == {n: sum(n in s for s in samples) for n in names}
    rates = Counter(str(sf.info(io.BytesIO(s.get("wav") or s["flac"])).samplerate) for s in samples)
    assert {k: v for k, v in mix["sample_rate"].items() if v} == dict(rates)
    assert sum(mix["channels"].values()) == 40


def test_same_seed_gives_identical_bytes_with_any_worker_count(dataset, tmp_path):
    out, manifest, _ = dataset
    parallel = make_shards(tmp_path / "parallel", workers=2, **ARGS)
    assert digests(tmp_path / "parallel") == digests(out)
    assert parallel == manifest


def test_other_seed_gives_other_bytes(dataset, tmp_path):
    out, _, _ = dataset
    make_shards(tmp_path / "other", workers=1, **{**ARGS, "seed": 8})
    assert set(digests(tmp_path / "other").values()).isdisjoint(digests(out).values())


def test_every_shard_has_its_own_random_stream():
    def topics(split, index):
        return tuple(
            shard_latents(seed=7, split=split, shard_index=index, num_samples=32, num_symbols=4).topic
        )

    streams = {topics("train", 0), topics("train", 1), topics("val", 0), topics("val", 1)}
    assert len(streams) == 4
    assert topics("train", 1) == topics("train", 1)


def test_six_symbols_and_custom_corruption(tmp_path):
    corruption = {"audio_pitch": 0.0, "image_shape": 0.3}
    manifest = make_shards(tmp_path, num_samples=12, val_fraction=0.0, num_symbols=6, corruption=corruption)
    assert manifest["corruption"]["audio_pitch"] == 0.0 and manifest["corruption"]["text_topic"] == 0.1
    assert manifest["chance_accuracy"] == pytest.approx(1 / 6)
    assert len(manifest["rendering"]["pitch_hz"]) == 6 and manifest["shards"]["val"] == []
    lat = shard_latents(
        seed=0, split="train", shard_index=0, num_samples=12, num_symbols=6, corruption=corruption
    )
    freqs = pitch_frequencies(6)
    for i, sample in enumerate(read_samples(tmp_path, manifest, "train")):
        *_, wave, rate, _, label = decode(sample)
        assert label == lat.label[i] < 6
        peak = np.fft.rfftfreq(len(wave), 1 / rate)[np.abs(np.fft.rfft(wave.mean(axis=1))).argmax()]
        assert peak == pytest.approx(freqs[lat.pitch[i]], rel=0.025)  # no pitch corruption: the clean pitch


def test_load_manifest_rejects_unknown_versions(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="format_version"):
        load_manifest(tmp_path)


def _tar_members(path) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes}, read with tarfile alone."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return out


@pytest.fixture(scope="module")
def features_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_features")
    return out, make_shards(out, workers=1, features_dim=8, **ARGS)


def test_the_features_variant_adds_a_npy_vector_showing_the_style(features_dataset, dataset):
    out, manifest = features_dataset
    plain_out, plain_manifest, _ = dataset
    assert manifest["features_dim"] == 8 and "features_dim" not in plain_manifest
    assert (
        manifest["format_mix"]["features"] == {"npy": 40} and "features" not in plain_manifest["format_mix"]
    )
    assert (
        len(manifest["caps"]) == 15
        and manifest["bayes_accuracy"] == manifest["caps"]["image+text+audio+features"]
    )
    assert "style" in manifest["label_rule"] and manifest["corruption"]["features_style"] == 0.1
    prototypes, squared_norms = basis(8)[:, :4], []
    np.testing.assert_allclose(basis(8).T @ basis(8), np.eye(8), atol=1e-12)  # orthonormal
    for split in ("train", "val"):
        for index, shard in enumerate(manifest["shards"][split]):
            lat = shard_latents(seed=7, split=split, shard_index=index, num_samples=manifest["shard_counts"][shard],
                                num_symbols=4, corruption=manifest["corruption"], features=True)  # fmt: skip
            members = _tar_members(out / shard)
            plain = _tar_members(plain_out / shard)
            for i, key in enumerate(sorted(members)):
                vector = np.load(io.BytesIO(members[key]["npy"]), allow_pickle=False)
                assert vector.dtype == np.float32 and vector.shape == (8,)
                # On the prototypes the vector is exactly its (observed) style's one-hot; the noise is elsewhere.
                onehot = np.eye(4)[lat.observed["features_style"][i]]
                np.testing.assert_allclose(vector @ prototypes, onehot, atol=1e-5)
                squared_norms.append(float(vector @ vector))
                assert int(members[key]["cls"]) == lat.label[i]
                # Every other member is byte for byte the three-modality benchmark's.
                assert {e: b for e, b in members[key].items() if e not in ("npy", "cls")} == {
                    e: b for e, b in plain[key].items() if e != "cls"
                }
            odd_scene = lat.topic == 1
            assert (lat.label[odd_scene] == 1 + 2 * (lat.style[odd_scene] % 2)).all()
            assert (lat.label == label_rule(lat.topic, lat.shape, lat.pitch, 4, lat.style)).all()
    # 1 from the prototype, 4 x NOISE_STD^2 = 4 from the noise (the mean of 40: +-0.45)
    assert 3.5 < np.mean(squared_norms) < 6.5


def test_shards_are_rewritten_when_the_features_dim_changes(tmp_path):
    small = {
        "num_samples": 6,
        "samples_per_shard": 6,
        "val_fraction": 0.0,
        "min_image_px": 16,
        "max_image_px": 16,
    }
    four = reuse_or_write(DemoConfig(**small, features_dim=6), tmp_path)
    assert four["features_dim"] == 6 and (tmp_path / "train-000000.tar").exists()
    assert reuse_or_write(DemoConfig(**small, features_dim=6), tmp_path) == four  # reused
    three = reuse_or_write(DemoConfig(**small), tmp_path)
    assert "features_dim" not in three and len(three["caps"]) == 7
    assert all("npy" not in m for m in _tar_members(tmp_path / "train-000000.tar").values())
    with pytest.raises(ValueError, match="features_dim must exceed"):
        make_shards(tmp_path / "x", num_samples=4, features_dim=4)


def test_shards_written_under_another_label_rule_are_not_reused(tmp_path):
    small = {
        "num_samples": 4,
        "samples_per_shard": 4,
        "val_fraction": 0.0,
        "min_image_px": 16,
        "max_image_px": 16,
    }
    first = reuse_or_write(DemoConfig(**small), tmp_path)
    stale = {**first, "label_rule": "an older rule"}
    (tmp_path / "dataset.json").write_text(json.dumps(stale))
    assert reuse_or_write(DemoConfig(**small), tmp_path) == first  # written again, with today's rule

"""The ``features`` modality end to end on the benchmark's features variant (a ``.npy`` vector per sample): a
cache made with ``mm-ray preprocess`` and training on it, training straight from the shards through the actor
pools, the 15-subset evaluation of both, and ``mm-ray embed`` with retrieval pairs that use the vector.

Slow: two Ray Train runs and an embedding pass (about two minutes on 2 cores). The expected counts and vectors
come from the tar files (``shardkit.read_tar_samples``) and ``itertools``, not from the pipeline.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from shardkit import read_tar_samples

from mm_ray.cli.main import main
from mm_ray.config.load import load_config
from mm_ray.data.cache import Cache
from mm_ray.demo.dataset import make_shards
from mm_ray.retrieval.embed import embed
from mm_ray.train.ray_trainer import fit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FOUR = ("image", "text", "audio", "features")
SUBSETS = ["+".join(c) for r in range(1, 5) for c in itertools.combinations(FOUR, r)]
DIM = 8
SETTINGS = (
    "data.modalities=[image,text,audio,features]",
    f"features.shape=[{DIM}]",
    "image.size=24",
    "audio.n_mels=16",
    "audio.duration_s=0.5",
    "text.max_length=16",
    "text.vocab_size=200",
    "text.tokenizer_train_samples=200",
)
TRAIN = (
    "model.preset=late_concat",
    "model.width=8",
    "model.depth=1",
    "model.fusion_dim=8",
    "model.num_classes=4",
    "train.epochs=2",
    "train.num_workers=1",
    "train.cpus_per_worker=0.5",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.subset_eval_every=1",
    "train.align_loss_weight=0.1",
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, list[str]]:
    out = tmp_path_factory.mktemp("features_variant")
    manifest = make_shards(
        out, num_samples=64, samples_per_shard=16, image_size=(32, 48), features_dim=DIM, workers=1
    )
    assert len(manifest["caps"]) == 15
    return {split: [str(out / name) for name in manifest["shards"][split]] for split in ("train", "val")}


def _samples(specs: list[str]) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for spec in specs:
        samples |= read_tar_samples(spec)
    return samples


def test_cache_mode_preprocesses_trains_scores_15_subsets_and_embeds(shards, tmp_path: Path) -> None:
    train_cache, val_cache = tmp_path / "cache" / "train", tmp_path / "cache" / "val"
    assert main(["preprocess", *shards["train"], "--out", str(train_cache), *SETTINGS]) == 0
    tokenizer = f"text.tokenizer={train_cache / 'tokenizer.json'}"
    assert main(["preprocess", *shards["val"], "--out", str(val_cache), *SETTINGS, tokenizer]) == 0
    cache = Cache.open(str(train_cache))
    assert list(cache.manifest.shapes["features"]) == [DIM]
    truth = _samples(shards["train"])
    rows = cache.dataset().take_all()
    assert sorted(r["__key__"] for r in rows) == sorted(truth)
    for row in rows:
        expected = np.load(io.BytesIO(truth[row["__key__"]]["npy"]), allow_pickle=False)
        np.testing.assert_array_equal(np.asarray(row["features"], np.float32), expected)

    cfg = load_config(
        None,
        [*SETTINGS, *TRAIN, "name=features_cache", f"output_dir={tmp_path / 'runs'}",
         f"train.cache={train_cache}", f"train.val_cache={val_cache}"],
    )  # fmt: skip
    result = fit(cfg)
    assert result.source == "cache" and result.epochs_run == 2
    assert list(result.subsets) == SUBSETS
    val = len(_samples(shards["val"]))
    assert all(scores["samples"] == val for scores in result.subsets.values())

    pairs = "embed.pairs=[features->text, image->features]"
    embedded = embed(
        Path(cfg.output_dir) / cfg.name, shards["val"], overrides=[pairs, "embed.gallery_size=8"]
    )
    assert embedded["modalities"] == list(FOUR) and embedded["samples"] == val
    records = {(r["query"], r["gallery"]): r for r in embedded["retrieval"]}
    assert set(records) == {("features", "text"), ("image", "features")}
    assert all(r["queries"] == val and 0.0 <= r["recall@1"] <= 1.0 for r in records.values())
    written = json.loads((Path(embedded["out"]) / "retrieval.json").read_text())
    assert [(r["query"], r["gallery"]) for r in written["retrieval"]] == list(records)


def test_streaming_mode_trains_from_the_shards_through_the_pools(shards, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [*SETTINGS, *TRAIN, "name=features_stream", f"output_dir={tmp_path / 'runs'}",
         f"train.storage_path={tmp_path / 'storage'}", "pools.layout=per_modality",
         # Four pools of 0.2 CPU: what a 2-CPU cluster has left beside the Train worker and the read tasks.
         *(f"pools.{m}.{k}" for m in FOUR for k in ("num_cpus=0.2", "min_size=1", "max_size=1")),
         f"data.shards={json.dumps(shards['train'])}", f"data.val_shards={json.dumps(shards['val'])}"],
    )  # fmt: skip
    result = fit(cfg)
    assert result.source == "shards"
    assert [m["train_samples"] for m in result.history] == [len(_samples(shards["train"]))] * 2
    assert all(m["ingest_samples_quarantined"] == 0 for m in result.history)
    assert list(result.subsets) == SUBSETS

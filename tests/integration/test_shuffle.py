"""Epoch-level shuffling: shards sorted by label train as well as the same samples in random order.

A cache written from class-sorted shards holds its rows class by class; without shuffling, training sees
one class after another and ends on the last one. The three runs below train the same model for one epoch
on the same samples (a caption word gives the class away, so one shuffled epoch learns it): sorted with
``train.shuffle`` (the default), randomly ordered, and sorted with shuffling off.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from shardkit import caption, good_sample, label_of, write_samples

from mm_ray.config.load import load_config
from mm_ray.data.build import build_cache
from mm_ray.train.ray_trainer import fit

pytestmark = pytest.mark.integration

SMALL = ("image.size=16", "audio.n_mels=16", "audio.duration_s=0.25", "text.max_length=8")
PER_SHARD = 100
CLASS_WORDS = ("meadow", "harbour", "canyon", "glacier")


def easy_sample(seed: int, label: int) -> dict[str, bytes]:
    """A shardkit sample whose caption starts with its class's word: learnable in one epoch when shuffled."""
    sample = good_sample(seed, label=label)
    sample["txt"] = f"{CLASS_WORDS[label]} {caption(seed)}".encode()
    return sample


def _write(samples: dict[str, dict[str, bytes]], keys: list[str], out: Path) -> list[str]:
    out.mkdir()
    return [
        str(
            write_samples(
                out / f"part-{i // PER_SHARD:03d}.tar", {k: samples[k] for k in keys[i : i + PER_SHARD]}
            )
        )
        for i in range(0, len(keys), PER_SHARD)
    ]


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shuffle")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(CLASS_WORDS), 1000)
    samples = {f"s{i:04d}": easy_sample(i, int(label)) for i, label in enumerate(labels)}
    keys = sorted(samples)
    train, val = keys[:800], keys[800:]
    by_label = sorted(train, key=lambda k: (label_of(samples[k]), k))
    assert [label_of(samples[k]) for k in by_label] == sorted(int(x) for x in labels[:800])
    shuffled = [str(k) for k in rng.permutation(train)]
    cfg = load_config(None, [*SMALL, "text.vocab_size=200"])
    sorted_cache = build_cache(cfg, _write(samples, by_label, root / "sorted"), str(root / "c-sorted"))
    tokenizer = sorted_cache.tokenizer_json
    build_cache(
        cfg, _write(samples, shuffled, root / "random"), str(root / "c-random"), tokenizer_json=tokenizer
    )
    build_cache(cfg, _write(samples, val, root / "val"), str(root / "c-val"), tokenizer_json=tokenizer)
    return {"sorted": root / "c-sorted", "random": root / "c-random", "val": root / "c-val", "root": root}


def _val_accuracy(caches: dict[str, Path], train: str, *overrides: str) -> float:
    cfg = load_config(
        None,
        [
            *SMALL,
            "model.width=16",
            "model.depth=1",
            "model.fusion_dim=16",
            f"name=shuffle-{train}-{len(overrides)}",
            f"train.cache={caches[train]}",
            f"train.val_cache={caches['val']}",
            f"train.storage_path={caches['root'] / 'storage'}",
            f"output_dir={caches['root'] / 'out'}",
            "train.epochs=1",
            "train.batch_size=16",
            "train.lr=0.006",
            "train.warmup_steps=5",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
            "train.subset_eval_every=0",
            *overrides,
        ],
    )
    return fit(cfg).val_accuracy


def test_sorted_shards_train_like_random_order_with_shuffling_and_worse_without(caches) -> None:
    sorted_shuffled = _val_accuracy(caches, "sorted")
    random_order = _val_accuracy(caches, "random")
    sorted_unshuffled = _val_accuracy(caches, "sorted", "train.shuffle=false")
    summary = json.dumps(
        {"sorted+shuffle": sorted_shuffled, "random": random_order, "sorted, no shuffle": sorted_unshuffled}
    )
    print(summary)
    assert abs(sorted_shuffled - random_order) <= 0.1, summary
    assert sorted_unshuffled <= sorted_shuffled - 0.15, summary

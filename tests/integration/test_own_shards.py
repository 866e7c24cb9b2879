"""The README's "Your own shards" commands on generated files, on a local Ray: both layouts preprocessed with
their documented settings (label map and every row's id checked against the labels written), then the
audio-caption set trained and evaluated on shards holding a label training never saw.

The same data also trains a model of one's own (``model.builder=builders:bag_of_features`` from ``tests/``) on Ray
Train, whose checkpoint ``evaluate`` rebuilds only when the caller names the builder.

Slow (about 4 minutes on 2 cores, 7 when they are busy: four preprocess runs, two Ray Train runs, three evaluates)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
from shardkit import write_audio_caption_layout, write_img2dataset_layout

from mm_ray.cli.main import main
from mm_ray.config.schema import RayConfig
from mm_ray.runtime import init_ray

from .conftest import SMALL

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMG2DATASET = ["data.labels=names", "data.members.json_label_field=category", "model.modalities=[image,text]"]
AUDIO_CAPTIONS = ["data.labels=names", "model.modalities=[text,audio]"]
TINY = ["model.width=8", "model.depth=1", "model.fusion_dim=8", "train.batch_size=8", "train.num_workers=1"]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """The module's local Ray, started with ``tests/`` on ``PYTHONPATH`` so that its workers (which inherit the
    environment) can import ``builders``, as a user's cluster would have their package installed."""
    tests_dir = str(Path(__file__).parents[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p))
        init_ray(RayConfig(num_cpus=2))
        yield
        ray.shutdown()


def _cache_labels(cache: Path) -> dict[str, int]:
    table = pq.read_table(cache / "data", columns=["__key__", "label"])
    return dict(zip(table.column("__key__").to_pylist(), table.column("label").to_pylist(), strict=True))


@pytest.mark.parametrize(
    ("writer", "own"),
    [(write_img2dataset_layout, IMG2DATASET), (write_audio_caption_layout, AUDIO_CAPTIONS)],
    ids=["img2dataset", "audio_captions"],
)
def test_preprocess_builds_the_label_map_from_the_files(tmp_path: Path, writer, own, capsys) -> None:
    truth = writer(tmp_path / "train", samples=16)
    cache = tmp_path / "cache"
    assert main(["preprocess", str(tmp_path / "train"), "--out", str(cache), *SMALL, *own]) == 0
    classes = sorted(set(truth.values()))  # independently: the labels written, in Python's string order
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["preprocess"]["classes"] == classes
    assert manifest["samples_ok"] == len(truth)
    assert _cache_labels(cache) == {key: classes.index(name) for key, name in truth.items()}
    printed = capsys.readouterr().out
    assert all(name in printed for name in classes)  # the label map table


def test_audio_captions_train_and_evaluate_with_the_checkpoints_label_map(tmp_path: Path, capsys) -> None:
    truth = write_audio_caption_layout(tmp_path / "train", samples=24)
    val = write_audio_caption_layout(tmp_path / "val", samples=8, offset=100)
    test = write_audio_caption_layout(
        tmp_path / "test",
        samples=8,
        offset=200,
        labels=("siren", "rain", "thunder"),  # thunder: never trained
    )
    classes = sorted(set(truth.values()))
    caches = tmp_path / "caches"
    assert (
        main(["preprocess", str(tmp_path / "train"), "--out", str(caches / "train"), *SMALL, *AUDIO_CAPTIONS])
        == 0
    )
    assert (
        main(
            [
                "preprocess",
                str(tmp_path / "val"),
                "--out",
                str(caches / "val"),
                *SMALL,
                *AUDIO_CAPTIONS,
                f"data.classes_from={caches / 'train'}",
                f"text.tokenizer={caches / 'train' / 'tokenizer.json'}",
            ]
        )
        == 0
    )
    assert _cache_labels(caches / "val") == {k: classes.index(v) for k, v in val.items()}
    run = [
        "name=sounds",
        f"output_dir={tmp_path / 'runs'}",
        f"train.cache={caches / 'train'}",
        f"train.val_cache={caches / 'val'}",
        "train.epochs=1",
        "model.modalities=[text,audio]",
        *SMALL,
        *TINY,
    ]
    assert main(["train", *run]) == 0
    capsys.readouterr()
    result = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "runs" / "sounds"),
                str(tmp_path / "test"),
                "--json",
                str(result),
                "data.error_budget=0.5",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    scores = json.loads(result.read_text())
    unseen = sorted(k for k, v in test.items() if v == "thunder")
    assert unseen and scores["quarantine_reasons"] == {"unknown_label": len(unseen)}
    known = {k: v for k, v in test.items() if v != "thunder"}
    assert scores["samples"] == len(known)
    by_class = {row["class"]: (row["id"], row["samples"]) for row in scores["classes"]}
    expected = {name: (classes.index(name), list(known.values()).count(name)) for name in set(known.values())}
    assert by_class == expected
    assert "accuracy by class" in printed and "siren" in printed

    # A model of one's own on the same caches, through Ray Train.
    own = [
        *run,
        "name=sounds_own",
        "model.builder=builders:bag_of_features",
        "model.builder_kwargs={hidden: 8}",
    ]
    assert main(["train", *own]) == 0
    capsys.readouterr()
    evaluate = [
        "evaluate",
        str(tmp_path / "runs" / "sounds_own"),
        str(tmp_path / "test"),
        "data.error_budget=0.5",
    ]
    assert main(evaluate) == 2  # the checkpoint names a builder the caller did not
    assert "pass model.builder=builders:bag_of_features" in capsys.readouterr().err
    assert main([*evaluate, "--json", str(result), "model.builder=builders:bag_of_features"]) == 0
    scores = json.loads(result.read_text())
    assert scores["preset"] == "builders:bag_of_features" and scores["samples"] == len(known)

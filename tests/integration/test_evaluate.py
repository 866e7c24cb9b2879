"""``mm-ray evaluate`` end to end: a checkpoint trained with Ray Train scores raw shards through the real
pipeline exactly as its training run scored the preprocessed validation cache.

One tiny run (2 epochs, 1 worker) on caches made from the demo shards serves every test in the module.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from mm_ray.cli.main import main
from mm_ray.config.load import load_config
from mm_ray.data.build import build_cache
from mm_ray.data.cache import Cache
from mm_ray.data.manifest import CacheManifest
from mm_ray.train.evaluate import evaluate
from mm_ray.train.metrics import DEFAULT_REGISTRY
from mm_ray.train.ray_trainer import fit

SUBSETS = DEFAULT_REGISTRY.subsets()

pytestmark = pytest.mark.integration

CACHE = ("image.size=32", "audio.n_mels=16", "audio.duration_s=0.5", "text.max_length=16")
TINY_MODEL = ("model.width=8", "model.depth=1", "model.fusion_dim=8")


@dataclasses.dataclass
class Trained:
    summary: dict[str, Any]
    val_specs: list[str]
    val_manifest: CacheManifest


@pytest.fixture(scope="module")
def trained(demo_shards, tmp_path_factory) -> Trained:
    shards, manifest = demo_shards
    out = tmp_path_factory.mktemp("evaluate")
    cfg = load_config(None, CACHE)
    val_specs = [str(shards / name) for name in manifest["shards"]["val"]]
    train = build_cache(cfg, [str(shards / name) for name in manifest["shards"]["train"]], str(out / "train"))
    build_cache(cfg, val_specs, str(out / "val"), tokenizer_json=train.tokenizer_json)
    overrides = [
        *CACHE,
        *TINY_MODEL,
        "name=evaluate",
        f"train.cache={out / 'train'}",
        f"train.val_cache={out / 'val'}",
        f"train.storage_path={out / 'runs'}",
        # Two epochs leave two checkpoints in the run directory, so picking the latest means something.
        "train.epochs=2",
        "train.num_workers=1",
        "train.batch_size=8",
    ]
    summary = fit(load_config(None, overrides)).as_dict()
    assert summary["epochs_run"] == 2 and summary["checkpoint"]
    return Trained(summary, val_specs, Cache.open(str(out / "val")).manifest)


def _assert_same_scores(scores: dict[str, dict], reference: dict[str, dict]) -> None:
    assert set(scores) == set(reference) == set(SUBSETS)
    for subset, ref in reference.items():
        got = scores[subset]
        # Same samples, same preprocessing, per-sample model (no batch statistics): the same predictions.
        assert got["samples"] == ref["samples"], subset
        assert got["accuracy"] == ref["accuracy"], subset
        # The losses differ from subset to subset, so they check that the inputs are the same; batches come
        # in another order and grouping than from the cache, so the sums may differ by rounding only.
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5), subset


def test_checkpoint_scores_the_val_shards_as_training_scored_the_val_cache(trained: Trained) -> None:
    result = evaluate(trained.summary["checkpoint"], trained.val_specs)
    assert result["device"] == "1 scoring actor (CPU)"  # by default the model runs in an actor, not here
    _assert_same_scores(result["subsets"], trained.summary["subsets"])
    assert result["samples"] == trained.val_manifest.samples_ok == trained.summary["metrics"]["val_samples"]
    assert result["quarantined"] == trained.val_manifest.samples_quarantined
    assert result["shards"] == len(trained.val_specs)
    assert result["epoch"] == 2 and result["picked_from"] is None
    assert result["checkpoint"] == trained.summary["checkpoint"]


def test_cli_on_the_run_directory_uses_its_latest_checkpoint(
    trained: Trained, tmp_path: Path, capsys
) -> None:
    run_dir = trained.summary["run_path"]
    assert len([p for p in Path(run_dir).glob("checkpoint_*") if p.is_dir()]) == 2
    json_path = tmp_path / "eval.json"
    # An override reaches the pipeline (the fused pool's CPUs) and, being about resources, changes no score.
    code = main(
        ["evaluate", run_dir, *trained.val_specs, "--json", str(json_path), "pools.fused.num_cpus=0.2"]
    )
    assert code == 0
    out = capsys.readouterr().out
    result = json.loads(json_path.read_text())
    assert result["checkpoint"] == trained.summary["checkpoint"] and result["epoch"] == 2
    assert result["picked_from"] == run_dir
    assert re.search(r"fused \(text\+image\+audio\): \S+ x 0\.2 CPU", result["pools"]), result["pools"]
    assert f"latest checkpoint of {run_dir}" in out
    _assert_same_scores(result["subsets"], trained.summary["subsets"])
    # The per-subset table: a header and one row per subset with its sample count and accuracy.
    assert "subset" in out and "accuracy" in out
    full = result["subsets"]["image+text+audio"]
    row = next(line for line in out.splitlines() if line.startswith("image+text+audio "))
    assert row.split()[1:3] == [str(full["samples"]), f"{full['accuracy']:.4f}"]


def test_cli_names_a_directory_that_is_not_a_checkpoint(trained: Trained, tmp_path: Path, capsys) -> None:
    code = main(["evaluate", str(tmp_path), *trained.val_specs])
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "not an mm_ray checkpoint" in err


def test_cli_refuses_an_input_size_the_model_was_not_trained_on(trained: Trained, capsys) -> None:
    code = main(["evaluate", trained.summary["checkpoint"], *trained.val_specs, "image.size=64"])
    assert code == 2
    assert "image.size: 64" in capsys.readouterr().err


def test_cli_ensemble_of_a_checkpoint_with_its_earlier_self(trained: Trained, tmp_path: Path) -> None:
    run_dir = Path(trained.summary["run_path"])
    first, last = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    json_path = tmp_path / "ensemble.json"
    assert (
        main(["evaluate", str(last), *trained.val_specs, "--ensemble", str(first), "--json", str(json_path)])
        == 0
    )
    result = json.loads(json_path.read_text())
    assert result["ensemble"] == [str(first)] and result["preset"].startswith("ensemble of ")
    # Averaged probabilities: a distribution whose loss is finite and differs from the last epoch's alone.
    full, alone = result["subsets"]["image+text+audio"], trained.summary["subsets"]["image+text+audio"]
    assert full["samples"] == alone["samples"] and math.isfinite(full["loss"])
    assert full["loss"] != pytest.approx(alone["loss"], rel=1e-6)


def test_scoring_actors_give_the_numbers_of_one_process(trained: Trained) -> None:
    # evaluate --workers: 2 actors, each on its part of the stream, their sums added up (as distributed
    # validation does in training) equal one process scoring the same shards.
    one = evaluate(  # the model in this process
        trained.summary["checkpoint"], trained.val_specs, overrides=["train.cpus_per_worker=0.25"], workers=0
    )
    two = evaluate(
        trained.summary["checkpoint"], trained.val_specs, overrides=["train.cpus_per_worker=0.25"], workers=2
    )
    assert two["samples"] == one["samples"] > 0 and two["device"].startswith("2 scoring actors")
    for subset in SUBSETS:
        assert two["subsets"][subset]["accuracy"] == one["subsets"][subset]["accuracy"]
        assert math.isclose(two["subsets"][subset]["loss"], one["subsets"][subset]["loss"], rel_tol=1e-6)
    assert two["classes"] == one["classes"]

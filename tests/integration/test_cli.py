"""The ``mm-ray`` commands run in-process through ``main(argv)``, on the module's local Ray.

``init_ray`` inside the commands finds Ray already running and reuses it, so these tests cost
one pipeline run per ingest, not a Ray start each.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from shardkit import write_bad_input_set

from mm_ray.cli.main import main

from .conftest import SMALL

pytestmark = pytest.mark.integration

TINY_DEMO = (
    "demo.num_samples=24",
    "demo.samples_per_shard=8",
    "demo.min_image_px=64",
    "demo.max_image_px=96",
)


@pytest.fixture(scope="module")
def made_shards(tmp_path_factory) -> tuple[Path, dict]:
    """``mm-ray make-shards DIR ... --json J``: the shard directory and the JSON summary."""
    out = tmp_path_factory.mktemp("cli") / "shards"
    summary_path = out.parent / "make_shards.json"
    assert main(["make-shards", str(out), *TINY_DEMO, "--json", str(summary_path)]) == 0
    return out, json.loads(summary_path.read_text())


def test_make_shards_writes_the_dataset_and_its_summary(made_shards) -> None:
    out, summary = made_shards
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["counts"]["total"] == 24 and summary["samples"] == manifest["counts"]
    shard_files = sorted(p.name for p in out.glob("*.tar"))
    assert shard_files == sorted(manifest["shard_counts"])
    assert sum(manifest["shard_counts"].values()) == 24
    assert summary["shards"] == {split: len(names) for split, names in manifest["shards"].items()}


def test_overrides_may_follow_options(tmp_path: Path, capsys) -> None:
    """``COMMAND ARGS --option X key=value``: the override after an option still counts (as documented)."""
    assert main(["config", "show", "--json", str(tmp_path / "unused.json"), "image.size=48"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["image"]["size"] == 48


def test_preprocess_writes_the_cache_and_json_summary(made_shards, tmp_path: Path, capsys) -> None:
    shards, _ = made_shards
    out, summary_path = tmp_path / "cache", tmp_path / "summary.json"
    # The order a user types: shards, options, then overrides.
    code = main(["preprocess", str(shards), "--out", str(out), "--json", str(summary_path), *SMALL])
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["samples_ok"] == 24
    assert summary["samples_quarantined"] == 0 and summary["quarantine_reasons"] == {}
    assert json.loads((out / "manifest.json").read_text())["samples_ok"] == 24
    assert list((out / "data").glob("*.parquet")) and (out / "tokenizer.json").is_file()
    assert "preprocess summary" in capsys.readouterr().out
    # Preprocessing into the same directory again replaces the cache (Ray Data itself would append to it).
    assert main(["preprocess", str(shards), "--out", str(out), *SMALL]) == 0
    assert pq.read_table(out / "data").num_rows == 24


def test_preprocess_over_the_error_budget_exits_3(tmp_path: Path, capsys) -> None:
    case = write_bad_input_set(tmp_path / "bad")
    code = main(["preprocess", *case.specs, *SMALL, "--out", str(tmp_path / "cache")])
    assert code == 3
    err = capsys.readouterr().err
    # Stopped as soon as the budget was certainly exceeded: the decoders may not have reached every bad image.
    assert "data.error_budget" in err and re.search(r"corrupt_image=[123]\b", err)
    assert (tmp_path / "cache" / "quarantine.jsonl").is_file()  # written before the run fails


@pytest.mark.parametrize("command", ["preprocess", "config"])
def test_bad_override_exits_2_naming_the_key(command, made_shards, tmp_path: Path, capsys) -> None:
    argv = {
        "preprocess": ["preprocess", str(made_shards[0]), "image.sise=3", "--out", str(tmp_path / "out")],
        "config": ["config", "show", "image.sise=3"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "image.sise" in err and "image.size" in err  # the bad key, and the suggestion
    assert not (tmp_path / "out").exists()  # rejected before any work


def test_missing_shards_exit_2_naming_the_spec(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "nowhere" / "train-*.tar")
    assert main(["preprocess", missing, *SMALL, "--out", str(tmp_path / "out")]) == 2
    assert missing in capsys.readouterr().err


def test_config_show_prints_the_resolved_config_and_explain_every_key(capsys) -> None:
    assert main(["config", "show", "image.size=48", "data.error_budget=0.1"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["image"]["size"] == 48 and shown["data"]["error_budget"] == 0.1
    assert shown["audio"]["n_mels"] == 64  # defaults are filled in
    assert main(["config", "explain"]) == 0
    explained = capsys.readouterr().out
    for key in ("data.error_budget", "image.size", "pools.image.num_cpus", "demo.num_samples"):
        assert key in explained


TINY_TRAINING = (
    "demo.train_presets=[unimodal_audio, late_concat]",
    "train.epochs=2",
    "train.batch_size=8",
    "model.width=8",
    "model.depth=1",
    "model.fusion_dim=8",
    "demo.sweep_presets=[late_concat, unimodal_text]",
    "demo.sweep_epochs=2",
)


def test_demo_generates_preprocesses_trains_and_reports(tmp_path: Path, capsys) -> None:
    summary_path = tmp_path / "demo.json"
    methods = (  # what pipelines/methods.yaml adds: variants, an ensemble, retrieval
        "demo.variants={late_concat_aux: [train.aux_loss_weight=0.3, train.augment.enabled=true], late_concat_align: [train.align_loss_weight=0.1]}",
        "demo.ensemble=[unimodal_audio, late_concat]",
        "demo.retrieval=[late_concat_align]",
        "embed.gallery_size=4",
    )
    argv = ["demo", *TINY_DEMO, *TINY_TRAINING, *methods, f"output_dir={tmp_path}", *SMALL]
    assert main([*argv, "--json", str(summary_path)]) == 0
    run_dir = tmp_path / "demo"
    summary = json.loads(summary_path.read_text())
    assert summary["run_dir"] == str(run_dir)
    ingest = summary["preprocess"]
    assert ingest["train"]["samples_ok"] + ingest["val"]["samples_ok"] == 24
    for split in ("train", "val"):
        cache = run_dir / "cache" / split
        assert json.loads((cache / "manifest.json").read_text())["samples_ok"] == ingest[split]["samples_ok"]
        assert list((cache / "data").glob("*.parquet"))
    assert 0.25 < summary["bayes_accuracy"] <= 1.0  # 4 classes: above chance
    # Each preset trained for 2 epochs in its own run directory, with checkpoints and run outputs.
    assert set(summary["training"]) == {
        "unimodal_audio",
        "late_concat",
        "late_concat_aux",
        "late_concat_align",
    }
    for preset, run in summary["training"].items():
        assert run["epochs_run"] == 2
        run_path = run_dir / "train" / preset
        assert len((run_path / "metrics.jsonl").read_text().splitlines()) == 2
        assert list(run_path.glob("checkpoint_*/state.pt"))
    # Each preset is scored against its own analytic reference from the shards' manifest.
    ensemble = "ensemble(unimodal_audio + late_concat)"
    assert [row["preset"] for row in summary["learning"]] == [
        "unimodal_audio",
        "late_concat",
        "late_concat_aux",
        "late_concat_align",
        ensemble,
    ]
    learning = {row["preset"]: row for row in summary["learning"]}
    assert learning["unimodal_audio"]["reference_accuracy"] == summary["caps"]["audio"]
    assert learning["late_concat"]["reference_accuracy"] == summary["bayes_accuracy"]
    accuracy = summary["training"]["late_concat"]["metrics"]["val_accuracy"]
    assert learning["late_concat"]["accuracy"] == accuracy
    # Variants are their preset with the overrides laid over it, as the run's config.yaml records.
    aux = json.loads((run_dir / "train" / "late_concat_aux" / "summary.json").read_text())
    assert aux["preset"] == "late_concat" and learning["late_concat_aux"]["reference"] == "Bayes"
    aux_train = yaml.safe_load((run_dir / "train" / "late_concat_aux" / "config.yaml").read_text())["train"]
    assert aux_train["aux_loss_weight"] == 0.3 and aux_train["augment"]["enabled"] is True
    # The ensemble is scored on every val sample and compared with the additive reference.
    assert summary["ensemble"]["samples"] == ingest["val"]["samples_ok"]
    assert learning[ensemble]["reference"] == "additive reference" and learning[ensemble]["verdict"] == ""
    # Retrieval: the aligned run's val embeddings are on disk and scored in both directions.
    (retrieval,) = summary["retrieval"].values()
    assert retrieval["aligned"] and retrieval["samples"] == ingest["val"]["samples_ok"]
    assert [(r["query"], r["gallery"]) for r in retrieval["retrieval"]] == [
        ("image", "text"),
        ("audio", "text"),
    ]
    assert all(0 <= r["recall@1"] <= r["recall@5"] <= 1 for r in retrieval["retrieval"])
    assert (
        pq.read_table(run_dir / "embeddings" / "late_concat_align" / "data").num_rows == retrieval["samples"]
    )
    out = capsys.readouterr().out
    assert "samples ok" in out  # the ingest table
    assert "held-out accuracy against the benchmark's references" in out and "Bayes" in out
    assert "validation accuracy by modality subset, every run" in out and "image+text+audio" in out
    assert "cross-modal retrieval on the val shards" in out and "image->text" in out
    # The closing sweep: one Ray Tune trial per sweep preset on the same cache, then its leaderboard.
    sweep = summary["sweep"]
    assert sweep["trials"] == 2 and sweep["done"] + sweep["stopped"] == 2 and sweep["decoded"]["trials"] == 0
    assert sweep["best"]["preset"] in {"late_concat", "unimodal_text"}
    assert (run_dir / "sweep" / "best_config.yaml").is_file()
    leaderboard = out[out.index("leaderboard (val_accuracy, max)") :]
    assert "late_concat" in leaderboard and "unimodal_text" in leaderboard

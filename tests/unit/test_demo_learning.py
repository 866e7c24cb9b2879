"""The learning report: each trained preset against its analytic reference, and the demo's embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_ray.config.load import ConfigError, as_dict
from mm_ray.demo.learning import (
    every_subset_holds,
    expectations_met,
    learning_rows,
    learning_table,
    reference_for,
)
from mm_ray.demo.run import DEMO_DEFAULTS, run_configs
from mm_ray.settings import load_config

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"

MANIFEST = {
    "caps": {
        "image": 0.56,
        "audio": 0.41,
        "text": 0.36,
        "image+audio": 0.83,
        "image+text": 0.57,
        "text+audio": 0.51,
        "image+text+audio": 0.83,
    },
    "additive_fusion": 0.71,
}


def test_each_kind_of_preset_has_its_own_reference() -> None:
    assert reference_for("unimodal_audio", ("image", "audio", "text"), MANIFEST) == ("audio cap", 0.41)
    assert reference_for("additive", ("image", "audio", "text"), MANIFEST) == ("additive reference", 0.71)
    assert reference_for("tensor", ("text", "image", "audio"), MANIFEST) == ("Bayes", 0.83)
    # A fusion restricted to two modalities is held to that pair's cap.
    assert reference_for("gated", ("text", "image"), MANIFEST) == ("image+text cap", 0.57)


def test_verdicts_follow_the_expectations() -> None:
    rows = learning_rows(
        {
            "unimodal_image": 0.55,
            "unimodal_text": 0.30,
            "additive": 0.70,
            "late_concat": 0.79,
            "tensor": 0.81,
        },
        MANIFEST,
    )
    verdicts = {r.preset: r.verdict for r in rows}
    assert verdicts["unimodal_image"].startswith("ok")
    assert verdicts["unimodal_text"].startswith("MISSED")  # 6 points under its cap
    assert verdicts["additive"].startswith("ok")
    assert verdicts["tensor"] == "best fusion, ok: within 3 pts"  # only the best fusion is judged
    assert verdicts["late_concat"] == ""
    assert rows[-1].gap_points == pytest.approx(-2.0)
    assert not expectations_met(rows)
    assert expectations_met([r for r in rows if r.preset != "unimodal_text"])


def test_additive_at_or_above_bayes_is_flagged() -> None:
    (row,) = learning_rows({"additive": 0.84}, MANIFEST)
    assert row.verdict.startswith("MISSED")


def test_the_embedded_demo_default_is_pipelines_demo_yaml() -> None:
    assert as_dict(load_config(None, DEMO_DEFAULTS)) == as_dict(load_config(PIPELINES / "demo.yaml"))


@pytest.mark.parametrize("pipeline", sorted(p.name for p in PIPELINES.glob("demo*.yaml")))
def test_every_shipped_demo_pipeline_names_real_presets(pipeline: str) -> None:
    # Loading checks every preset name (a Literal of the zoo's names).
    assert load_config(PIPELINES / pipeline).demo.train_presets


def test_an_unknown_preset_is_named_with_the_key() -> None:
    with pytest.raises(ConfigError, match=r"demo\.train_presets\[1\].*late_concatt"):
        load_config(None, ["demo.train_presets=[film, late_concatt]"])


def test_variants_and_ensembles_get_their_presets_reference_but_no_verdict() -> None:
    rows = learning_rows(
        {"late_concat": 0.80, "late_concat_aux": 0.99, "ensemble": 0.70},
        MANIFEST,
        presets={"late_concat_aux": "late_concat", "ensemble": "additive"},
    )
    by_name = {row.preset: row for row in rows}
    assert by_name["late_concat_aux"].reference == by_name["late_concat"].reference == "Bayes"
    assert by_name["ensemble"].reference == "additive reference"
    assert by_name["late_concat_aux"].verdict == by_name["ensemble"].verdict == ""
    # The best-fusion verdict stays with the plain preset run, however well a variant does.
    assert by_name["late_concat"].verdict.startswith("best fusion")


def test_demo_runs_are_the_presets_then_the_variants_and_mistakes_name_the_key(tmp_path) -> None:
    cfg = load_config(
        None,
        [
            "demo.train_presets=[unimodal_image, late_concat]",
            "demo.variants={aux: [train.aux_loss_weight=0.3], film_lr: [model.preset=film, train.lr=0.01]}",
            "demo.ensemble=[unimodal_image, late_concat]",
        ],
    )
    runs = run_configs(cfg, tmp_path)
    assert list(runs) == ["unimodal_image", "late_concat", "aux", "film_lr"]
    assert (runs["aux"].model.preset, runs["aux"].train.aux_loss_weight) == ("late_concat", 0.3)
    assert (runs["film_lr"].model.preset, runs["film_lr"].train.lr) == ("film", 0.01)
    assert {r.train.cache for r in runs.values()} == {str(tmp_path / "cache" / "train")}
    assert {r.output_dir for r in runs.values()} == {str(tmp_path / "train")}
    bad = {
        "demo.variants={aux: [train.aux_los_weight=0.3]}": r"demo\.variants\.aux: unknown key 'train\.aux_los_weight'",
        "demo.variants={late_concat: [train.lr=0.1]}": r"demo\.variants\.late_concat: the name is taken",
        "demo.variants={x: [model.preset=nope]}": r"demo\.variants\.x",
        "demo.ensemble=[late_concat, aux]": r"demo\.ensemble: \['aux'\] not trained",
        "demo.ensemble=[late_concat]": r"demo\.ensemble: an ensemble needs at least two runs",
        "demo.retrieval=[film]": r"demo\.retrieval: \['film'\] not trained",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            run_configs(
                load_config(None, ["demo.train_presets=[unimodal_image, late_concat]", override]), tmp_path
            )


def _scores(**accuracies: float) -> dict[str, dict[str, float]]:
    return {key.replace("_", "+"): {"accuracy": acc} for key, acc in accuracies.items()}


AT_CAPS = {key.replace("+", "_"): cap for key, cap in MANIFEST["caps"].items()}


def test_the_every_subset_verdict_judges_each_subset_against_its_own_cap() -> None:
    near = _scores(**{**AT_CAPS, "image_text": 0.55, "image_text_audio": 0.825})  # -2 and -0.5 pts
    far = _scores(**{**AT_CAPS, "image_text": 0.53, "text": 0.30})  # -4 and -6 pts
    weak_full = _scores(**{**AT_CAPS, "image_text_audio": 0.815})  # 1.5 pts under the best fusion
    rows = learning_rows(
        {
            "film": 0.83,
            "film_subsets": 0.825,
            "late_concat": 0.83,
            "late_concat_subsets": 0.815,
            "additive": 0.7,
        },
        MANIFEST,
        presets={"film_subsets": "film", "late_concat_subsets": "late_concat"},
        subsets={"film": far, "film_subsets": near, "late_concat_subsets": weak_full, "additive": near},
    )
    every = {row.preset: row.every_subset for row in rows}
    assert every["film_subsets"] == "ok: every subset within 3 pts (worst image+text -2.0)"
    assert every["film"] == "MISSED: 2 subset(s) over 3 pts under cap, worst text -6.0"
    assert every["late_concat_subsets"].startswith("MISSED: all modalities -1.5 pts from the best fusion")
    assert every["late_concat"] == every["additive"] == ""  # no subset scores / not a fusion
    assert every_subset_holds(rows) is True
    assert every_subset_holds([r for r in rows if r.preset != "film_subsets"]) is False
    assert every_subset_holds(learning_rows({"film": 0.83}, MANIFEST)) is None
    # A model above a cap is noise, not a miss; a subset left unscored gives no verdict.
    above = learning_rows({"film": 0.83}, MANIFEST, subsets={"film": _scores(**{**AT_CAPS, "audio": 0.5})})
    assert above[0].every_subset.startswith("ok")
    partial = {k: v for k, v in near.items() if k != "audio"}
    assert learning_rows({"film": 0.83}, MANIFEST, subsets={"film": partial})[0].every_subset == ""


def test_the_learning_table_shows_the_every_subset_column_only_when_judged() -> None:
    plain = learning_table(learning_rows({"film": 0.83}, MANIFEST))
    assert "every subset" not in plain
    judged = learning_table(learning_rows({"film": 0.83}, MANIFEST, subsets={"film": _scores(**AT_CAPS)}))
    assert "every subset" in judged.splitlines()[0] and "ok: every subset within 3 pts" in judged


def test_the_subsets_pipeline_trains_film_and_late_concat_with_and_without_subset_dropout(tmp_path) -> None:
    runs = run_configs(load_config(PIPELINES / "subsets.yaml"), tmp_path)
    settings = {
        name: (run.model.preset, run.model.subset_dropout, run.model.subset_dropout_after, run.train.epochs)
        for name, run in runs.items()
    }
    assert settings == {
        "film": ("film", 0.0, 0, 8),
        "late_concat": ("late_concat", 0.0, 0, 8),
        "late_concat_subsets": ("late_concat", 0.5, 8, 11),
        "film_subsets": ("film", 0.5, 8, 11),
        "late_concat_11": ("late_concat", 0.0, 0, 11),
        "film_11": ("film", 0.0, 0, 11),
    }
    assert all(run.train.subset_eval_every == 1 for run in runs.values())


FOUR_MANIFEST = {
    "caps": {
        **MANIFEST["caps"],
        "features": 0.36,
        "image+features": 0.56,
        "text+features": 0.56,
        "audio+features": 0.41,
        "image+text+features": 0.57,
        "image+audio+features": 0.83,
        "text+audio+features": 0.71,
        "image+text+audio": 0.64,
        "image+text+audio+features": 0.83,
    },
    "additive_fusion": 0.62,
}


def test_with_four_modalities_only_the_four_modality_fusion_is_held_to_bayes() -> None:
    four = ("image", "text", "audio", "features")
    assert reference_for("film", four, FOUR_MANIFEST) == ("Bayes", 0.83)
    assert reference_for("film", four[:3], FOUR_MANIFEST) == ("image+text+audio cap", 0.64)
    assert reference_for("unimodal_features", four, FOUR_MANIFEST) == ("features cap", 0.36)
    rows = learning_rows(
        {"unimodal_features": 0.35, "film": 0.81, "late_concat": 0.79},
        FOUR_MANIFEST,
        modalities=four,
        subsets={"film": {key: {"accuracy": cap - 0.01} for key, cap in FOUR_MANIFEST["caps"].items()}},
    )
    verdicts = {r.preset: (r.reference, r.verdict, r.every_subset) for r in rows}
    assert verdicts["unimodal_features"] == ("features cap", "ok: within 3 pts", "")
    assert verdicts["film"][:2] == ("Bayes", "best fusion, ok: within 3 pts")
    assert verdicts["film"][2].startswith("ok: every subset within 3 pts")
    # One of the 15 subsets missing from the scores: no every-subset verdict.
    partial = {k: {"accuracy": 0.9} for k in FOUR_MANIFEST["caps"] if k != "text+features"}
    assert (
        learning_rows({"film": 0.83}, FOUR_MANIFEST, modalities=four, subsets={"film": partial})[
            0
        ].every_subset
        == ""
    )
    far = {k: {"accuracy": c} for k, c in FOUR_MANIFEST["caps"].items()} | {
        "text+audio+features": {"accuracy": 0.6}
    }
    (row,) = learning_rows({"film": 0.83}, FOUR_MANIFEST, modalities=four, subsets={"film": far})
    assert row.every_subset == "MISSED: 1 subset(s) over 3 pts under cap, worst text+audio+features -11.0"


def test_the_features_pipeline_trains_four_modalities_on_the_features_variant(tmp_path) -> None:
    cfg = load_config(PIPELINES / "features.yaml")
    assert cfg.demo.features_dim > 0 and cfg.features.shape == [cfg.demo.features_dim]
    runs = run_configs(cfg, tmp_path)
    assert {r.model.preset for r in runs.values()} == {"unimodal_features", "film"}
    assert all(list(r.data.modalities) == ["image", "text", "audio", "features"] for r in runs.values())


def test_reading_features_from_demo_shards_without_them_is_an_error(tmp_path) -> None:
    four = ["data.modalities=[image,text,audio,features]"]
    with pytest.raises(ConfigError, match=r"demo\.features_dim=0"):
        run_configs(load_config(None, [*four, "features.shape=[16]"]), tmp_path)
    with pytest.raises(ConfigError, match=r"features\.shape: the demo's feature vectors are \[16\]"):
        run_configs(load_config(None, [*four, "features.shape=[8]", "demo.features_dim=16"]), tmp_path)
    # The features variant's shards read as three modalities: fine (the .npy members are not read).
    assert run_configs(load_config(None, ["demo.features_dim=16"]), tmp_path)

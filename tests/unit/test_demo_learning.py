"""The learning report: each trained preset against its analytic reference, and the demo's embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_ray.cli.demo import DEMO_DEFAULTS, check_presets
from mm_ray.config.load import ConfigError, as_dict, load_config
from mm_ray.demo.learning import expectations_met, learning_rows, reference_for

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"

MANIFEST = {
    "caps": {
        "image": 0.56,
        "audio": 0.41,
        "text": 0.36,
        "image+audio": 0.83,
        "image+text": 0.57,
        "audio+text": 0.51,
        "image+audio+text": 0.83,
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
    cfg = load_config(PIPELINES / pipeline)
    check_presets(cfg.demo.train_presets)
    assert cfg.demo.train_presets


def test_an_unknown_preset_is_named_with_the_key() -> None:
    with pytest.raises(ConfigError, match=r"demo\.train_presets.*late_concatt"):
        check_presets(["late_concatt"])

"""The task variants' references: the closed forms against a simulation of the same model, and the shards that
``mm-ray make-shards task.kind=...`` writes (no Ray)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from mm_ray.cli.main import main
from mm_ray.demo import task_variants as tv


def test_bayes_tag_accuracy_matches_a_simulation_of_the_bayes_rule():
    rng = np.random.default_rng(0)
    drawn = tv._draw("multilabel", rng, 200_000)
    decided = drawn["posterior"] >= 0.5
    simulated = (decided == drawn["tags"]).mean(axis=0)
    exact = tv.bayes_tag_accuracy()["text+features"]
    assert simulated == pytest.approx([exact[t] for t in tv.TAGS], abs=0.004)
    # Without the features, their tags are decided by the prior alone.
    assert tv.bayes_tag_accuracy()["text"]["animal"] == 0.5


def test_best_r2_matches_the_conditional_means_on_a_simulation():
    rng = np.random.default_rng(1)
    drawn = tv._draw("regression", rng, 200_000)
    y, best = drawn["targets"], drawn["best"]
    r2 = 1 - ((y - best) ** 2).sum(axis=0) / ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    exact = tv.regression_reference()
    assert r2 == pytest.approx([exact["score"]["text+features"], exact["level"]["text+features"]], abs=0.004)


@pytest.mark.parametrize("kind", ["multilabel", "regression"])
def test_make_shards_writes_the_variant(tmp_path, kind):
    out = tmp_path / kind
    assert (
        main(
            [
                "make-shards",
                str(out),
                f"task.kind={kind}",
                "demo.num_samples=120",
                "demo.samples_per_shard=50",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "dataset.json").read_text())
    assert (
        manifest["counts"] == {"train": 96, "val": 24}
        and manifest["shards"]["train"][0] == "train-000000.tar"
    )
    with tarfile.open(out / "train-000000.tar") as tar:
        names = tar.getnames()
    assert len([n for n in names if n.endswith(".npy")]) == 50 and any(n.endswith(".json") for n in names)
    if kind == "multilabel":
        assert any(n.endswith(".cls") for n in names)

"""Multi-label and regression end to end, through the CLI on local Ray: the task variants' real shards are
preprocessed into caches and trained on (the cache run), trained on straight from the shards (the streaming
run), evaluated and embedded; the docs/tasks.md command block runs as written (with tiny sizes laid over it).

Expected values come from the data: the tag map is the sorted tag names the generator wrote, the target
statistics are numpy's mean/std of the targets in the shards' JSON, and the metrics must beat what the label
prior alone gives (a model that learned nothing)."""

from __future__ import annotations

import json
import re
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mm_ray.cli.main import main
from mm_ray.demo.task_variants import TAGS, write_task_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCS = Path(__file__).parents[2] / "docs" / "tasks.md"
TINY = ["data.modalities=[text,features]", "features.shape=[64]", "text.max_length=12", "text.vocab_size=256",
        "model.width=16", "model.depth=1", "model.fusion_dim=32", "train.batch_size=32", "train.num_workers=1",
        "train.warmup_steps=10", "train.lr=0.005", "train.torch_threads=2"]  # fmt: skip
TASK = {
    "multilabel": ["task.kind=multilabel"],
    "regression": ["task.kind=regression", "task.targets=[score,level]"],
}


def _targets(shards: list[Path]) -> np.ndarray:
    """The targets in the shards' JSON members, read with tarfile and json alone."""
    values = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    fields = json.loads(tar.extractfile(member).read())
                    values.append([float(fields["score"]), float(fields["level"])])
    return np.array(values)


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("task_variants")
    for kind in TASK:
        write_task_dataset(kind, str(root / kind), num_samples=900, samples_per_shard=200, val_fraction=0.25)
    return root


@pytest.mark.parametrize("kind", list(TASK))
def test_a_cache_run_trains_evaluates_and_embeds(variants, tmp_path, kind):
    shards = variants / kind
    caches = tmp_path / "caches"
    for split in ("train", "val"):
        args = [
            "preprocess",
            *sorted(str(p) for p in shards.glob(f"{split}-*.tar")),
            "--out",
            str(caches / split),
        ]
        extra = [f"text.tokenizer={caches / 'train' / 'tokenizer.json'}"] if split == "val" else []
        if split == "val" and kind == "multilabel":
            extra.append(f"data.classes_from={caches / 'train'}")
        assert main([*args, *TASK[kind], *TINY, *extra]) == 0
    manifest = json.loads((caches / "train" / "manifest.json").read_text())
    assert manifest["preprocess"]["task"]["kind"] == kind
    if kind == "multilabel":
        assert manifest["preprocess"]["classes"] == sorted(TAGS)
    else:
        values = _targets(sorted(shards.glob("train-*.tar")))
        stats = manifest["preprocess"]["task"]["target_stats"]
        assert stats["mean"] == pytest.approx(values.mean(axis=0), rel=1e-4)
        assert stats["std"] == pytest.approx(values.std(axis=0), rel=1e-3)
    run = ["train", f"train.cache={caches / 'train'}", f"train.val_cache={caches / 'val'}", "train.epochs=3",
           f"output_dir={tmp_path / 'runs'}", "name=t", *TASK[kind], *TINY, "--json", str(tmp_path / "t.json")]  # fmt: skip
    assert main(run) == 0
    trained = json.loads((tmp_path / "t.json").read_text())
    assert set(trained["subsets"]) == {"text", "features", "text+features"}
    metrics = trained["metrics"]
    if kind == "multilabel":
        # The prior alone decides every tag at its majority: a mean tag accuracy of this.
        prior_accuracy = np.mean([max(p, 1 - p) for p in (0.5, 0.3, 0.2, 0.4, 0.5, 0.25)])
        assert metrics["val_tag_accuracy"] > prior_accuracy + 0.05
        assert 0 < metrics["val_macro_f1"] <= 1 and metrics["val_map"] > 0.5
        assert "val_accuracy" not in metrics
    else:
        assert metrics["val_r2"] > 0.3 and metrics["val_mae"] > 0
    scored = ["evaluate", str(tmp_path / "runs" / "t"), *sorted(str(p) for p in shards.glob("val-*.tar"))]
    assert main([*scored, "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["task"] == kind
    names = [row["class"] for row in result["classes"]]
    assert names == (sorted(TAGS) if kind == "multilabel" else ["score", "level"])
    full = result["subsets"]["text+features"]
    # The same checkpoint on the same val samples: evaluate through the pipeline agrees with training's validation.
    headline = "map" if kind == "multilabel" else "r2"
    assert full[headline] == pytest.approx(trained["subsets"]["text+features"][headline], abs=1e-4)
    if kind == "regression":
        # Predictions are de-standardised before the metrics: the per-target MAE is on the raw scale (score ~ 10s).
        by_name = {row["class"]: row for row in result["classes"]}
        assert by_name["score"]["mae"] > 3 * by_name["level"]["mae"]
    embedded = ["embed", str(tmp_path / "runs" / "t"), *sorted(str(p) for p in shards.glob("val-*.tar")),
                "--out", str(tmp_path / "emb"), "embed.pairs=[text->features]"]  # fmt: skip
    assert main(embedded) == 0
    retrieval = json.loads((tmp_path / "emb" / "retrieval.json").read_text())["retrieval"]
    assert retrieval and "class@1" not in retrieval[0] and "recall@1" in retrieval[0]


@pytest.mark.parametrize("kind", list(TASK))
def test_a_streaming_run_trains_from_the_shards(variants, tmp_path, kind):
    shards = variants / kind
    run = ["train", f"data.shards=['{shards}/train-{{000000..000003}}.tar']",
           f"data.val_shards=[{shards}/val-000000.tar,{shards}/val-000001.tar]", "train.epochs=2",
           f"output_dir={tmp_path / 'runs'}", "name=s", *TASK[kind], *TINY, "--json", str(tmp_path / "s.json")]  # fmt: skip
    assert main(run) == 0
    trained = json.loads((tmp_path / "s.json").read_text())
    assert trained["source"] == "shards"
    if kind == "multilabel":
        assert trained["num_classes"] == len(TAGS) and trained["metrics"]["val_map"] > 0.5
    else:
        assert trained["num_classes"] == 2 and trained["metrics"]["val_r2"] > 0.2
    assert trained["ingest"]["samples_quarantined"] == 0


def _docs_commands() -> list[list[str]]:
    """The ``mm-ray`` lines of the first ``bash`` block of docs/tasks.md."""
    block = re.search(r"```bash\n(.*?)```", DOCS.read_text(), re.S)
    assert block, "docs/tasks.md has no bash block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("mm-ray ")]


def test_the_docs_commands_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).parents[2])  # the pipelines/ paths of the docs resolve from the repo
    small = ["demo.num_samples=600", "demo.samples_per_shard=150", "train.epochs=1", f"output_dir={tmp_path}"]
    commands = _docs_commands()
    assert [c[0] for c in commands] == ["make-shards", "make-shards", "demo", "demo"]
    for command in commands:
        if command[0] == "make-shards":  # its output directory: under the test's tmp_path
            command = [command[0], str(tmp_path / Path(command[1]).name), *command[2:]]
        assert main([*command, *small]) == 0, command

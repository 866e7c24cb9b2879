"""``mm-ray predict`` end to end on a local Ray: every good sample of labelled, unlabelled and damaged shards gets
the row an independent in-process computation gives it, one Parquet file per shard; a re-run reads only the shards
without a file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scoring_kit import reference_predictions, write_checkpoint
from shardkit import good_sample, write_samples

from mm_ray.cli.main import main
from mm_ray.inference.predict import predict
from mm_ray.inference.shard_outputs import output_name

pytestmark = pytest.mark.integration

SMALL = ("image.size=32", "audio.duration_s=0.25", "audio.n_mels=16", "text.max_length=16", "model.preset=gated",
         "model.width=8", "model.depth=1", "model.fusion_dim=8")  # fmt: skip


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("predict")
    labelled = write_samples(root / "labelled.tar", {f"a{i:02d}": good_sample(i) for i in range(10)})
    unlabelled = {f"b{i:02d}": {k: v for k, v in good_sample(20 + i).items() if k != "cls"} for i in range(8)}
    damaged = {f"c{i:02d}": good_sample(40 + i) for i in range(6)}
    damaged["c03"] = {**damaged["c03"], "jpg": b"\xff\xd8" + np.random.default_rng(1).bytes(500)}
    urls = [str(labelled), str(write_samples(root / "unlabelled.tar", unlabelled)),
            str(write_samples(root / "damaged.tar", damaged))]  # fmt: skip
    return write_checkpoint(root / "ckpt", urls, SMALL), urls


def _read(out: Path) -> dict[str, dict]:
    rows = {}
    for path in sorted(out.glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[row["__key__"]] = {**row, "file": path.name}
    return rows


def test_every_good_sample_gets_the_reference_prediction_in_its_shards_file(case, tmp_path: Path) -> None:
    ckpt, urls = case
    result = predict(ckpt, urls, out=str(tmp_path / "out"), quarantine_log=tmp_path / "q.jsonl")
    expected = reference_predictions(ckpt, urls)
    rows = _read(tmp_path / "out")
    assert set(rows) == set(expected) and len(rows) == 10 + 8 + 5  # the corrupt image is set aside
    for key, row in rows.items():
        np.testing.assert_allclose(row["probabilities"], expected[key], atol=1e-5)
        assert row["predicted"] == int(np.argmax(expected[key]))
        assert row["file"] == output_name(urls["abc".index(key[0])])
    assert result["samples"] == 23 and result["files_written"] == 3 and result["quarantined"] == 1
    assert [json.loads(line)["key"] for line in (tmp_path / "q.jsonl").read_text().splitlines()] == ["c03"]
    assert sorted(pq.read_schema(tmp_path / "out" / output_name(urls[0])).names) == [
        "__key__", "predicted", "probabilities"]  # fmt: skip


@pytest.mark.slow  # two more predict runs (~25 s here); the resume logic alone: tests/unit/test_shard_outputs.py
def test_a_rerun_reads_only_the_shards_without_a_file_and_embeddings_on_request(case, tmp_path: Path) -> None:
    ckpt, urls = case
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), *urls, "--out", str(out), "predict.embedding=true"]) == 0
    kept = out / output_name(urls[0])
    before = kept.stat().st_mtime_ns
    (out / output_name(urls[1])).unlink()  # as if the run had stopped before this shard's file was written
    result = predict(ckpt, urls, out=str(out), overrides=["predict.embedding=true"])
    assert result["shards_skipped"] == 2 and result["files_written"] == 1 and result["samples"] == 8
    assert kept.stat().st_mtime_ns == before
    rows = _read(out)
    assert len(rows) == 23
    # The fused embedding: the input of the gated fusion's classifier head (model.fusion_dim=8 wide).
    assert {len(row["embedding"]) for row in rows.values()} == {8}
    assert predict(ckpt, urls, out=str(out))["shards_skipped"] == 3  # nothing left: Ray is not even needed

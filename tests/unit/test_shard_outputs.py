"""Predictions written one file per shard (no Ray): a shard's file appears only once all its good samples are in,
whole; a fresh writer on the same place (a re-run) sees which shards are done; local and S3 alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mm_ray.inference.shard_outputs import ShardOutputs, output_name


def _batch(shard_of: list[str], keys: list[str]) -> dict[str, np.ndarray]:
    n = len(keys)
    return {
        "__key__": np.array(keys, dtype=object),
        "__shard__": np.array(shard_of, dtype=object),
        "predicted": np.arange(n, dtype=np.int64),
        "probabilities": np.full((n, 3), 1 / 3, dtype=np.float32),
    }


def _exercise(out: str, storage_options: dict, read) -> None:
    a, b = "s3://bucket/x/000.tar", "/data/y/000.tar"  # same name, other folders: distinct files
    assert output_name(a) != output_name(b) and output_name(a).startswith("000-")
    outputs = ShardOutputs(out, storage_options)
    outputs.add(_batch([a, b, a], ["a0", "b0", "a1"]))
    outputs.flush_complete({a: 3})  # a: 2 of its 3 good samples in; b: not read to its end yet
    assert outputs.files_written == 0 and not outputs.done(a)
    outputs.add(_batch([a], ["a2"]))
    outputs.flush_complete({a: 3})
    assert outputs.done(a) and not outputs.done(b)
    assert read(output_name(a)).column("__key__").to_pylist() == ["a0", "a1", "a2"]
    assert read(output_name(a)).schema.field("probabilities").type.list_size == 3

    again = ShardOutputs(out, storage_options)  # what a re-run sees
    assert again.done(a) and not again.done(b)
    outputs.close({a: 3, b: 1, "/data/z/empty.tar": 0})
    assert read(output_name(b)).num_rows == 1
    assert read(output_name("/data/z/empty.tar")).num_rows == 0  # all quarantined: done, not read again


def test_local(tmp_path: Path) -> None:
    _exercise(str(tmp_path / "out"), {}, lambda name: pq.read_table(tmp_path / "out" / name))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary left


def test_s3(s3) -> None:
    pytest.importorskip("boto3")
    import io

    def read(name: str):
        body = s3.client().get_object(Bucket=s3.bucket, Key=f"preds/{name}")["Body"].read()
        return pq.read_table(io.BytesIO(body))

    _exercise(f"s3://{s3.bucket}/preds", s3.storage_options, read)

"""The pipeline reading shards from S3 (moto's S3 server on loopback): same samples as on local disk.

The demo shards are uploaded once; the pipeline is pointed at them with a glob and with a brace
range, S3 settings coming from ``data.storage_options`` as a user would pass them on the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from shardkit import label_of, read_tar_samples

from mm_ray import columns as C
from mm_ray.modalities.image_decode import ImagePreprocessor

from .conftest import IMAGE_SIZE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bucket_prefix(s3, demo_shards) -> str:
    """``s3://<bucket>/<prefix>/`` holding a copy of the demo shards."""
    return s3.upload_dir(demo_shards[0], prefix="integration-s3-ingest")


@pytest.fixture(scope="module")
def train_truth(demo_shards) -> dict[str, dict[str, bytes]]:
    root, manifest = demo_shards
    samples: dict[str, dict[str, bytes]] = {}
    for name in manifest["shards"]["train"]:
        samples |= read_tar_samples(root / name)
    return samples


def storage_options(s3) -> str:
    # JSON is YAML, so the override parses to the dict[str, str] that data.storage_options holds.
    return "data.storage_options=" + json.dumps(s3.storage_options)


def test_glob_over_s3_gives_the_local_samples(run_ingest, s3, bucket_prefix, train_truth) -> None:
    run = run_ingest([bucket_prefix + "train-*.tar"], storage_options(s3))
    assert sorted(run.keys) == sorted(train_truth)
    labels = dict(zip(run.keys, run.columns[C.LABEL].tolist(), strict=True))
    assert labels == {key: label_of(members) for key, members in train_truth.items()}
    assert all(str(shard).startswith(bucket_prefix) for shard in run.columns[C.SHARD])
    # The bytes that came over S3 are the local bytes: each image matches a local decode.
    images = ImagePreprocessor(size=IMAGE_SIZE)
    for key, members in train_truth.items():
        local = next(members[ext] for ext in ("jpg", "png") if ext in members)
        np.testing.assert_array_equal(run.row(key)["image"], images.decode(local))
    summary = run.ingest.finish()
    assert summary["samples_ok"] == len(train_truth) and summary["samples_quarantined"] == 0
    assert summary["shards_unreadable"] == []


def test_brace_range_over_s3_reads_its_shards_and_names_a_missing_one(
    run_ingest, s3, bucket_prefix, demo_shards, train_truth
) -> None:
    count = len(demo_shards[1]["shards"]["train"])
    # One name past the last shard: it does not exist in the bucket.
    spec = bucket_prefix + f"train-{{000000..{count:06d}}}.tar"
    run = run_ingest([spec], storage_options(s3))
    assert sorted(run.keys) == sorted(train_truth)
    labels = dict(zip(run.keys, run.columns[C.LABEL].tolist(), strict=True))
    assert labels == {key: label_of(members) for key, members in train_truth.items()}
    summary = run.ingest.finish()
    assert summary["shards_unreadable"] == [bucket_prefix + f"train-{count:06d}.tar"]
    assert summary["samples_read"] == len(train_truth) and summary["samples_ok"] == len(train_truth)

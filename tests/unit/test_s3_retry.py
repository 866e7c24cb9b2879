"""A dropped object-store connection mid-shard is retried with back-off, not recorded as a truncated shard.

A real S3-compatible server (moto, on loopback) is stopped while a shard is being read and started again on
the same port; the reader must resume at the byte it had reached and deliver every sample, exactly as the
tar file holds them (``shardkit.read_tar_samples`` reads the same file with ``tarfile`` alone). When the
endpoint stays away longer than the retries last, the shard is recorded as truncated, naming the retries.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from shardkit import good_sample, read_tar_samples, write_samples

from mm_ray.data.raw import RawSample
from mm_ray.data.sources import Backoff
from mm_ray.data.tar_stream import iter_shard
from mm_ray.quarantine import QuarantineRecord, Reason

FAST = Backoff(attempts=6, first_s=0.2, max_s=1.0)


@pytest.fixture()
def server(monkeypatch):
    from s3_server import ENV, S3TestServer

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with S3TestServer(bucket="retry") as s3:
        yield s3


@pytest.fixture()
def shard(tmp_path):
    """~6 MB of samples (incompressible noise members), so the reader needs several buffered reads."""
    samples = {}
    for i in range(12):
        members = good_sample(i, label=i % 3)
        members["bin"] = os.urandom(500_000)
        samples[f"s{i:02d}"] = members
    return write_samples(tmp_path / "big-000000.tar", samples)


def _read(server, shard, *, down_s: float | None, backoff: Backoff) -> list:
    """Read ``shard`` from the server, which goes away after the first sample for ``down_s`` seconds
    (``None``: until the read is over)."""
    url = server.upload_dir(shard.parent, prefix="retry") + shard.name
    items = iter_shard(url, storage_options=server.storage_options, buffer_size=1 << 20, retry=backoff)
    first = next(items)  # the stream is open and the first 1 MiB was read
    server.stop()
    restart = threading.Timer(down_s, server.restart) if down_s is not None else None
    if restart:
        restart.start()
    try:
        return [first, *items]
    finally:
        if restart:
            restart.join()
        else:
            server.restart()  # for the fixture's stop


def test_a_dropped_connection_is_retried_and_no_sample_is_lost(server, shard) -> None:
    # Longer than the S3 client's own quick retries ride out (about 3 s here): only the back-off resumes it.
    started = time.monotonic()
    items = _read(server, shard, down_s=6.0, backoff=FAST)
    assert time.monotonic() - started >= 6.0  # it really waited for the endpoint to come back
    assert [i for i in items if isinstance(i, QuarantineRecord)] == []
    got = {i.key: i.members for i in items if isinstance(i, RawSample)}
    truth = read_tar_samples(shard)
    assert sorted(got) == sorted(truth)
    for key, members in truth.items():
        assert {ext: got[key][ext] for ext in ("jpg", "cls", "txt")} == {
            ext: members[ext] for ext in ("jpg", "cls", "txt")
        }


def test_an_endpoint_gone_longer_than_the_retries_truncates_the_shard_naming_them(server, shard) -> None:
    items = _read(server, shard, down_s=None, backoff=Backoff(attempts=1, first_s=0.2, max_s=0.2))
    records = [i for i in items if isinstance(i, QuarantineRecord)]
    # The sample being read when the endpoint went away is cut; the shard is recorded as truncated.
    assert [r.reason for r in records] == [Reason.TRUNCATED_SAMPLE, Reason.TRUNCATED_SHARD]
    assert all("after 1 retries with back-off" in r.detail for r in records)
    good = [i.key for i in items if isinstance(i, RawSample)]
    assert good == sorted(read_tar_samples(shard))[: len(good)]  # what came before the cut, in order


def test_the_open_is_retried_too(server, shard) -> None:
    url = server.upload_dir(shard.parent, prefix="retry") + shard.name
    server.stop()  # away when the shard is opened, longer than the S3 client's own quick retries (~2-3 s)
    restart = threading.Timer(5.0, server.restart)
    restart.start()
    try:
        items = list(iter_shard(url, storage_options=server.storage_options, retry=FAST))
    finally:
        restart.join()
    assert [i for i in items if isinstance(i, QuarantineRecord)] == []
    assert sorted(i.key for i in items) == sorted(read_tar_samples(shard))


def test_a_missing_object_is_not_retried(server) -> None:
    started = time.monotonic()
    slow = Backoff(attempts=3, first_s=5.0, max_s=5.0)  # a retry would take 5 s at least
    [record] = list(iter_shard("s3://retry/none.tar", storage_options=server.storage_options, retry=slow))
    assert record.reason == Reason.UNREADABLE_SHARD and time.monotonic() - started < 5.0


@pytest.mark.parametrize("versioned", [False, True])
def test_an_object_replaced_mid_read_ends_the_shard_there_never_splicing_two_versions(
    server, shard, tmp_path, versioned
) -> None:
    if versioned:
        server.client().put_bucket_versioning(Bucket="retry", VersioningConfiguration={"Status": "Enabled"})
    url = server.upload_dir(shard.parent, prefix="retry") + shard.name
    # The replacement: the same keys, other bytes (what a re-run of the writer would upload).
    other = {}
    for i in range(12):
        members = good_sample(100 + i, label=(i + 1) % 3)
        members["bin"] = os.urandom(500_000)
        other[f"s{i:02d}"] = members
    replacement = write_samples(tmp_path / "v2" / shard.name, other)
    items = iter_shard(url, storage_options=server.storage_options, buffer_size=1 << 20, retry=FAST)
    first = next(items)  # the first 1 MiB GET is in
    server.client().upload_file(str(replacement), "retry", f"retry/{shard.name}")
    rest = list(items)
    samples = [i for i in [first, *rest] if isinstance(i, RawSample)]
    records = [i for i in rest if isinstance(i, QuarantineRecord)]
    assert records and records[-1].reason == Reason.TRUNCATED_SHARD
    assert "the object changed while it was read" in records[-1].detail
    truth = read_tar_samples(shard)
    assert len(samples) < len(truth)  # it stopped where the object changed
    for sample in samples:  # and everything it kept is the first version's, byte for byte
        assert (
            sample.members["bin"] == truth[sample.key]["bin"]
            and sample.members["jpg"] == truth[sample.key]["jpg"]
        )

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

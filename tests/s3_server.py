"""A real S3-compatible server on loopback for tests: moto in server mode, one bucket.

Usage (the session fixture ``s3`` in ``tests/conftest.py`` does this)::

    with S3TestServer(bucket="mm-ray-test") as s3:
        base = s3.upload_dir(tmp_path / "shards", prefix="case1")   # -> "s3://mm-ray-test/case1/"
        expand_shards(base + "*.tar", storage_options=s3.storage_options)

pyarrow talks to it through ``storage_options`` (plain HTTP, path-style requests), boto3 through
``client()``. The server runs in a thread of the test process and listens on a free port.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
# What S3 clients need in the environment: dummy credentials (both boto3 and the AWS SDK inside
# pyarrow read them), no EC2 metadata lookups (they stall for seconds off-cloud), and loopback
# traffic kept away from any configured proxy.
ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


class S3TestServer:
    """moto's S3 on ``127.0.0.1:<free port>`` with one bucket; a context manager that stops it."""

    def __init__(self, bucket: str = "mm-ray-test"):
        self.bucket = bucket
        self._server: ThreadedMotoServer | None = None
        self.port = 0

    def start(self) -> S3TestServer:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def restart(self) -> None:
        """Listen again on the same port after ``stop`` (an endpoint that dropped out and came back).
        moto keeps its buckets in this process, so the objects are still there."""
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def __enter__(self) -> S3TestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict[str, str]:
        """Keyword arguments for ``pyarrow.fs.S3FileSystem`` (the reader's ``storage_options``)."""
        return {
            "endpoint_override": f"127.0.0.1:{self.port}",
            "scheme": "http",
            "region": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
        }

    def client(self):
        """A boto3 S3 client for this server."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def upload_dir(self, local_dir: str | os.PathLike, prefix: str) -> str:
        """Upload every file under ``local_dir`` to ``s3://<bucket>/<prefix>/``; return that URL."""
        prefix = prefix.strip("/")
        client = self.client()
        root = Path(local_dir)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            client.upload_file(str(path), self.bucket, f"{prefix}/{path.relative_to(root).as_posix()}")
        return f"s3://{self.bucket}/{prefix}/"

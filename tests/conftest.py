"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on loopback with one bucket, for the whole test session.

    Tests share the bucket, so each uploads under its own prefix (e.g. the test's name). Dummy AWS
    credentials (and NO_PROXY for loopback) are in the environment from first use until the end of
    the test run, so S3 clients that take credentials from the environment work too.
    """
    # Imported here: moto and boto3 are test extras that only the object-storage tests need.
    from s3_server import ENV, S3TestServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in ENV.items():
            mp.setenv(name, value)
        with S3TestServer() as server:
            yield server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` where torch sees no CUDA device (CI, laptops)."""
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if not gpu_tests:
        return
    import torch  # only imported when a gpu test was collected

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in gpu_tests:
        item.add_marker(skip)

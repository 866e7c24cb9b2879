"""The shared-storage check for runs on a multi-node cluster (``mm_ray.cluster.storage``), on made-up node lists."""

from __future__ import annotations

import pytest

from mm_ray.cluster.storage import is_local_path, storage_warning


def node(address: str, alive: bool = True) -> dict:
    return {"NodeID": f"id-{address}", "NodeManagerAddress": address, "Alive": alive}


TWO_MACHINES = [node("10.0.0.1"), node("10.0.0.2")]


@pytest.mark.parametrize(
    ("path", "local"),
    [("runs", True), ("/mnt/nfs/runs", True), ("file:///srv/runs", True), ("s3://bucket/runs", False)],
)
def test_local_paths_are_told_from_object_store_urls(path: str, local: bool) -> None:
    assert is_local_path(path) is local


def test_a_local_path_on_several_machines_gets_a_warning_that_says_what_to_use() -> None:
    warning = storage_warning("/srv/runs", TWO_MACHINES)
    assert warning is not None
    assert "'/srv/runs'" in warning and "2 alive nodes" in warning and "10.0.0.2" in warning
    assert "s3://" in warning and "same path on every node" in warning


@pytest.mark.parametrize(
    "nodes",
    [
        [node("10.0.0.1")],  # one node
        [node("10.0.0.1"), node("10.0.0.2", alive=False)],  # the other one is gone
        [node("127.0.0.1"), node("127.0.0.1")],  # two nodes on one machine share its disk
        [],
    ],
)
def test_no_warning_where_a_local_path_reaches_every_node(nodes: list[dict]) -> None:
    assert storage_warning("runs", nodes) is None


def test_no_warning_for_shared_storage() -> None:
    assert storage_warning("s3://bucket/runs", TWO_MACHINES) is None
    assert storage_warning("gs://bucket/runs", TWO_MACHINES) is None

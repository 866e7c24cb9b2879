"""Fault drill: a worker node dies during a two-node training job; the job still finishes.

A real loopback cluster (``tests/loopback_cluster.py``): a head and ``node2``, one CPU each, so a run of two
Train workers of one CPU each has exactly one worker on each node. Once the run's first checkpoint is
registered, every process of ``node2`` is SIGKILLed (its raylet and the Train worker it hosts, as a lost
machine would vanish) and a fresh ``node3`` joins, as an autoscaler would add one. With
``train.max_failures`` Ray Train restarts the worker group on the head and ``node3`` from the last
checkpoint, and the job ends ``SUCCEEDED`` with every epoch trained once.

The module drives the cluster only through the job API and the shared files: no Ray in the test process
(the integration conftest's local Ray is switched off below).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from loopback_cluster import TINY_DEMO, LoopbackCluster

from mm_ray.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 40
"""Enough epochs of the tiny model that the run is still going when the node is killed after the first."""
TINY = TINY_DEMO
JOB = "node-loss-drill"


@pytest.fixture(scope="module")
def local_ray() -> None:
    """No local Ray in this module: the loopback cluster is the only Ray, reached through its job API."""


def _job_status(auth: list[str], capsys) -> str:
    capsys.readouterr()
    main(["jobs", "status", JOB, *auth])
    found = re.search(rf"{JOB}: (\w+)", capsys.readouterr().out)
    return found.group(1) if found else "UNKNOWN"


def _registered_checkpoints(run_storage: Path) -> int:
    """Checkpoints Ray Train's controller has registered for the run (what a restart resumes from)."""
    try:
        snapshot = json.loads((run_storage / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):  # not written yet, or being written
        return 0
    return len(snapshot.get("checkpoint_results") or [])


def _wait_for_first_checkpoint(run_storage: Path, auth: list[str], capsys, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _registered_checkpoints(run_storage):
            return
        status = _job_status(auth, capsys)
        if status in {"SUCCEEDED", "FAILED", "STOPPED"}:
            main(["jobs", "logs", JOB, *auth])
            pytest.fail(
                f"the job ended ({status}) before its first checkpoint:\n{capsys.readouterr().out[-5000:]}"
            )
        time.sleep(0.5)
    pytest.fail(f"no checkpoint registered under {run_storage} within {timeout_s} s")


# Slow: 3.5-4.5 minutes on 2 cores (cluster start, a preprocessing job, a training job restarted once).
def test_a_worker_node_killed_mid_run_the_job_restarts_on_a_new_node_and_succeeds(tmp_path, capsys) -> None:
    with LoopbackCluster.start() as cluster:
        cluster.add_node("node2")
        auth = ["--address", cluster.address, "--token-file", str(cluster.token_file)]
        # The caches, made by a first job (the demo stopped after preprocessing).
        data = ["demo", *TINY, f"output_dir={tmp_path}", "name=data"]
        data += ["demo.train_presets=[]", "demo.sweep_presets=[]"]
        assert main(["submit", *auth, "--wait", "--", *data]) == 0
        cache = tmp_path / "data" / "cache"
        storage = tmp_path / "storage"
        train = ["train", *TINY, f"output_dir={tmp_path / 'runs'}", "name=drill"]
        train += [f"train.cache={cache / 'train'}", f"train.val_cache={cache / 'val'}"]
        train += [f"train.storage_path={storage}", f"train.epochs={EPOCHS}", "train.batch_size=8"]
        # One worker per one-CPU node; max_failures leaves room for a placement tried on the dying node
        # before the head has marked it dead.
        train += ["train.num_workers=2", "train.cpus_per_worker=1", "train.max_failures=3"]
        assert main(["submit", *auth, "--no-wait", "--submission-id", JOB, "--", *train]) == 0
        before = cluster.node_ids()
        assert set(before) == {"head", "node2"}

        _wait_for_first_checkpoint(storage / "drill", auth, capsys)
        assert cluster.kill_node("node2") > 0
        cluster.add_node("node3")

        capsys.readouterr()
        assert main(["jobs", "logs", JOB, "--follow", *auth]) == 0
        logs = capsys.readouterr().out
        assert _job_status(auth, capsys) == "SUCCEEDED", logs[-5000:]
        after = cluster.node_ids()

    history = [
        json.loads(line) for line in (tmp_path / "runs" / "drill" / "metrics.jsonl").read_text().splitlines()
    ]
    # Every epoch exactly once, in the run's history and in the progress lines the job printed as they ended:
    # the epoch the kill interrupted was trained again, not kept half-done or counted twice.
    assert [m["epoch"] for m in history] == list(range(1, EPOCHS + 1))
    printed = [int(n) for n in re.findall(rf"^epoch (\d+)/{EPOCHS}\b", logs, flags=re.MULTILINE)]
    assert sorted(printed) == list(range(1, EPOCHS + 1)), printed
    # The restart shows as a jump of resumed_from: epochs 1..r ran in the first attempt, the rest after a
    # restore from epoch r's checkpoint (r >= 1: the kill came after the first checkpoint was registered).
    resumed = history[-1]["resumed_from"]
    assert 1 <= resumed < EPOCHS
    assert [m["resumed_from"] for m in history] == [0] * resumed + [resumed] * (EPOCHS - resumed)
    # The first attempt trained on the head and node2, the restarted one on the head and node3.
    assert set(history[0]["worker_nodes"].split(",")) == {before["head"], before["node2"]}
    assert set(history[-1]["worker_nodes"].split(",")) == {after["head"], after["node3"]}
    assert after["head"] == before["head"] and "node2" not in after
    summary = json.loads((tmp_path / "runs" / "drill" / "summary.json").read_text())
    assert summary["epochs_run"] == EPOCHS

"""``mm-ray submit`` / ``mm-ray jobs`` against a real two-node Ray cluster on loopback, with token auth.

The cluster is two ``ray start`` processes on this machine (a head and a second node with its own CPU and
a ``node2`` resource), each with its own temp dir: nodes sharing one would garbage-collect each other's
runtime-env packages, deleting a running job's working directory. Only the processes started here are
stopped (``ray stop`` would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from loopback_cluster import RAY, TINY_DEMO, free_ports

from mm_ray.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = [*TINY_DEMO, "train.epochs=2", "train.batch_size=8"]


@pytest.fixture(scope="module")
def cluster() -> dict:
    # Short: Ray's Unix socket paths live under the temp dir and are limited to ~107 bytes.
    base = Path(tempfile.mkdtemp(prefix="mmray-"))
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    # The job's `python` must be this interpreter (the nodes run the job entrypoint through the shell).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    gcs, dash, *ports = free_ports(12)
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    head = [RAY, "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]
    head += ["--include-dashboard=true", f"--temp-dir={base / 'head'}", *common]
    head += [f"--ray-client-server-port={ports[0]}", f"--dashboard-agent-listen-port={ports[1]}"]
    head += [f"--metrics-export-port={ports[2]}", f"--runtime-env-agent-port={ports[3]}"]
    worker = [RAY, "start", f"--address=127.0.0.1:{gcs}", f"--temp-dir={base / 'node2'}", *common]
    worker += ['--resources={"node2": 1}', f"--dashboard-agent-listen-port={ports[4]}"]
    worker += [f"--metrics-export-port={ports[5]}", f"--runtime-env-agent-port={ports[6]}"]
    try:
        for command in (head, worker):
            started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield {"address": f"http://127.0.0.1:{dash}", "token": token, "out": base / "out"}
    finally:
        _stop(base)
        shutil.rmtree(base, ignore_errors=True)


def _stop(base: Path) -> None:
    """Kill the Ray processes whose command line names one of this cluster's temp dirs or sessions."""
    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(base) in cmdline:
            mine.append(proc)
    for proc in mine:
        proc.kill()
    psutil.wait_procs(mine, timeout=30)


def test_a_request_without_the_token_is_refused_with_a_clear_error(
    cluster, monkeypatch, tmp_path, capsys
) -> None:
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token to fall back on
    assert main(["jobs", "list", "--address", cluster["address"]]) == 2
    err = capsys.readouterr().err
    assert "refused the request" in err and "--token" in err and "RAY_AUTH_TOKEN" in err


def test_the_demo_trains_on_both_nodes_and_a_queued_sweep_reports_its_leaderboard(
    cluster, tmp_path, capsys
) -> None:
    auth = ["--address", cluster["address"], "--token", cluster["token"]]
    out = cluster["out"]
    demo_json = out / "demo.json"
    # Two workers of one CPU each on two one-CPU nodes: Ray Train must use both nodes.
    demo = ["demo", *TINY, f"output_dir={out}", "demo.train_presets=[late_concat]", "demo.sweep_presets=[]"]
    demo += ["train.num_workers=2", "train.cpus_per_worker=1", "--json", str(demo_json)]
    assert main(["submit", *auth, "--wait", "--", *demo]) == 0
    summary = json.loads(demo_json.read_text())
    run = summary["training"]["late_concat"]
    assert run["epochs_run"] == 2 and len(set(run["worker_nodes"])) == 2
    assert summary["preprocess"]["train"]["samples_ok"] + summary["preprocess"]["val"]["samples_ok"] == 24

    # The demo's closing sweep as a second job (one worker per trial; the shards and cache are reused),
    # submitted without waiting, as a scheduled sweep would be, then followed with `mm-ray jobs`.
    sweep_json = out / "sweep.json"
    sweep = ["demo", *TINY, f"output_dir={out}", "demo.train_presets=[]", "train.epochs=1"]
    sweep += [
        "demo.sweep_presets=[late_concat, unimodal_text]",
        "demo.sweep_epochs=1",
        "--json",
        str(sweep_json),
    ]
    assert main(["submit", *auth, "--no-wait", "--submission-id", "mm-ray-sweep", "--", *sweep]) == 0
    capsys.readouterr()
    assert main(["jobs", "logs", "mm-ray-sweep", "--follow", *auth]) == 0
    assert "leaderboard (val_accuracy, max)" in capsys.readouterr().out
    assert main(["jobs", "status", "mm-ray-sweep", *auth]) == 0
    assert "mm-ray-sweep: SUCCEEDED" in capsys.readouterr().out
    result = json.loads(sweep_json.read_text())["sweep"]
    assert result["trials"] == 2 and result["best"]["preset"] in {"late_concat", "unimodal_text"}
    assert main(["jobs", "list", *auth]) == 0
    listed = capsys.readouterr().out
    assert "mm-ray-sweep" in listed and "SUCCEEDED" in listed

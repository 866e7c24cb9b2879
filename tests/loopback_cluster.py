"""A real multi-node Ray cluster on this machine's loopback, for tests that need nodes to come and go.

    with LoopbackCluster.start() as cluster:      # a head of one CPU, token auth on
        cluster.add_node("node2")                 # a second node: one CPU and a ``node2`` resource
        ... main(["submit", "--address", cluster.address, "--token-file", str(cluster.token_file), ...])
        cluster.kill_node("node2")                # SIGKILL its raylet and every worker it started
        cluster.add_node("node3")                 # a replacement, as an autoscaler would add

Every node is a ``ray start`` process with its own temp dir under one short base dir (Ray's Unix socket
paths live there and are limited to ~107 bytes). Nodes sharing a temp dir would garbage-collect each
other's runtime-env packages, deleting a running job's working directory; separate dirs also let a test
kill exactly one node: its processes are the ones whose command line names its dir. ``ray stop`` would
stop every Ray on the machine, so nothing here calls it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))

TINY_DEMO = [
    "demo.num_samples=24",
    "demo.samples_per_shard=8",
    "demo.min_image_px=64",
    "demo.max_image_px=96",
    "image.size=32",
    "audio.duration_s=0.5",
    "audio.n_mels=32",
    "text.max_length=40",
    "model.width=8",
    "model.depth=1",
    "model.fusion_dim=8",
]
"""Demo settings small enough for jobs on a loopback cluster of one-CPU nodes: 24 samples, a width-8 model."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclasses.dataclass
class LoopbackCluster:
    """A head node and the worker nodes added since; ``stop`` kills only their processes."""

    base: Path
    gcs_port: int
    dashboard_port: int
    token: str
    env: dict[str, str]
    nodes: list[str] = dataclasses.field(default_factory=list)
    """The worker nodes added, by name (their processes may have been killed since)."""

    @property
    def address(self) -> str:
        """The dashboard (job API) address for ``mm-ray submit`` / ``mm-ray jobs``."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def token_file(self) -> Path:
        return self.base / "auth_token"

    @classmethod
    def start(cls, num_cpus: int = 1, resources: dict[str, float] | None = None) -> LoopbackCluster:
        """Start the head (``num_cpus`` CPUs, custom ``resources``, dashboard on loopback, token auth); raises
        if it fails."""
        base = Path(tempfile.mkdtemp(prefix="mmray-"))
        token = secrets.token_hex(32)
        (base / "auth_token").write_text(token)
        (base / "auth_token").chmod(0o600)
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        # A job's `python` must be this interpreter (the nodes run the job entrypoint through the shell).
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        gcs, dash, *ports = free_ports(6)
        cluster = cls(base, gcs, dash, token, env)
        head = [
            RAY,
            "start",
            "--head",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
        ]
        head += ["--include-dashboard=true", f"--ray-client-server-port={ports[0]}"]
        if resources:
            head.append(f"--resources={json.dumps(resources)}")
        try:
            cluster._ray_start("head", head, num_cpus, ports[1:])
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def add_node(self, name: str, num_cpus: int = 1, resources: dict[str, float] | None = None) -> None:
        """Start a worker node with ``num_cpus`` CPUs, a custom resource ``{name: 1}`` and ``resources``."""
        declared = json.dumps({name: 1, **(resources or {})})
        start = [RAY, "start", f"--address=127.0.0.1:{self.gcs_port}", f"--resources={declared}"]
        self._ray_start(name, start, num_cpus, free_ports(3))
        self.nodes.append(name)

    def _ray_start(self, name: str, command: list[str], num_cpus: int, ports: list[int]) -> None:
        # Every node of one machine needs its own agent ports (Ray's defaults would collide).
        command = [*command, f"--temp-dir={self.base / name}", "--node-ip-address=127.0.0.1"]
        command += [
            f"--num-cpus={num_cpus}",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={ports[0]}",
        ]
        command += [f"--metrics-export-port={ports[1]}", f"--runtime-env-agent-port={ports[2]}"]
        started = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)
        if started.returncode != 0:
            raise RuntimeError(
                f"ray start ({name}) failed:\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}"
            )

    def node_ids(self) -> dict[str, str]:
        """``{node name: Ray node id}`` of the nodes alive now, from the dashboard's state API (the head's
        name is ``head``; a worker node is known by the custom resource ``add_node`` gave it)."""
        request = urllib.request.Request(
            f"{self.address}/api/v0/nodes?detail=1&limit=100",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            nodes = json.load(reply)["data"]["result"]["result"]
        ids = {}
        for node in nodes:
            if node["state"] != "ALIVE":
                continue
            named = [r for r in node.get("resources_total", {}) if r in self.nodes]
            ids[named[0] if named else "head"] = node["node_id"]
        return ids

    def node_processes(self, name: str) -> list[psutil.Process]:
        """The processes of node ``name`` (its raylet, agents and workers): their command lines name its dir."""
        return _processes_naming(self.base / name)

    def kill_node(self, name: str) -> int:
        """SIGKILL every process of node ``name``, as a lost machine would vanish; returns how many."""
        return _kill(self.node_processes(name))

    def stop(self) -> None:
        """Kill every process of this cluster and remove its temp dirs."""
        _kill(_processes_naming(self.base))
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _processes_naming(path: Path) -> list[psutil.Process]:
    """The processes whose command line names ``path``, and their descendants: Ray's workers are the
    raylet's children, and their command lines no longer name anything (``ray::Actor.method`` titles)."""
    # The path as a whole component: "node2" must not match "node23".
    pattern = re.compile(re.escape(str(path)) + r"(?![\w.-])")
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if pattern.search(" ".join(proc.info["cmdline"] or [])):
                found.update({p.pid: p for p in [proc, *proc.children(recursive=True)]})
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _kill(procs: list[psutil.Process]) -> int:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=30)
    return len(procs)

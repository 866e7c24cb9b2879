"""``mm-ray bench serve``: latency and throughput of ``mm-ray serve`` under a bounded loopback load.

    mm-ray bench serve --shards shards/val-000000.tar          # 4 clients, 400 requests of the shard's samples

An untrained checkpoint of the config's model (``bench predict``'s) is exported and served on a fresh local Ray of
``cores`` CPUs (one replica); ``clients`` threads each send one sample's members as JSON, wait for the answer and
send the next, until ``requests`` answers came (a closed loop: at most ``clients`` requests in flight). A warm-up
of ``clients`` requests is not counted. Reported: requests/s and the latency percentiles of the counted requests.
"""

from __future__ import annotations

import base64
import json
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from mm_ray.bench.records import ServeBench


def _payloads(urls: list[str], limit: int) -> list[bytes]:
    from mm_ray.data.raw import RawSample
    from mm_ray.data.tar_stream import iter_shard

    out = []
    for url in urls:
        for item in iter_shard(url):
            if isinstance(item, RawSample):
                members = {ext: base64.b64encode(data).decode() for ext, data in item.members.items()}
                out.append(json.dumps({"members": members}).encode())
            if len(out) >= limit:
                return out
    return out


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def bench_serve(
    *, cfg: Any, urls: list[str], cores: int, clients: int = 4, requests: int = 400, max_batch_size: int = 16
) -> ServeBench:
    import ray
    from ray import serve

    from mm_ray.bench.predict import write_checkpoint
    from mm_ray.config.schema import RayConfig
    from mm_ray.inference.export import export
    from mm_ray.inference.serve_app import serve_export
    from mm_ray.runtime import init_ray

    payloads = _payloads(urls, 256)
    with tempfile.TemporaryDirectory() as tmp:
        export(write_checkpoint(cfg, urls, Path(tmp) / "ckpt"), Path(tmp) / "export")
        init_ray(RayConfig(num_cpus=cores))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = serve_export(str(Path(tmp) / "export"), port=port, num_cpus=1.0, max_batch_size=max_batch_size)
        try:
            for body in payloads[:clients]:
                _post(url, body)  # warm-up: the replica's first batch, the proxy's first connection
            latencies: list[float] = []
            statuses: list[int] = []
            lock = threading.Lock()
            counter = iter(range(requests))

            def client() -> None:
                for i in counter:  # the shared iterator hands out request numbers until all are taken
                    body = payloads[i % len(payloads)]
                    t0 = time.perf_counter()
                    status = _post(url, body)
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                        statuses.append(status)

            started = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - started
        finally:
            serve.shutdown()
            ray.shutdown()
    ms = np.asarray(latencies) * 1000
    return ServeBench(
        clients=clients,
        requests=len(latencies),
        replicas=1,
        max_batch_size=max_batch_size,
        seconds=round(seconds, 2),
        requests_per_s=round(len(latencies) / seconds, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        max_ms=round(float(ms.max()), 1),
        errors=sum(s != 200 for s in statuses),
    )

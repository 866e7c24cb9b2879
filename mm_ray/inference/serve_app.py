"""``mm-ray serve EXPORT_DIR``: an exported model behind Ray Serve's HTTP proxy (the ``serve`` extra).

    app = serve_export("exports/demo", host="127.0.0.1", port=8000)   # starts/joins Ray, deploys, returns
    # POST http://127.0.0.1:8000/  {"members": {"jpg": "<base64>", "txt": "<base64>", "wav": "<base64>"}}
    #   200 {"predicted": "bus", "probabilities": [...], "present": {...}}
    #   422 {"error": "corrupt_image", "detail": "..."}   a sample the ingest pools would quarantine
    #   400 {"error": "bad_request", "detail": "..."}     not JSON, no "members", a member not base64
    #   413 {"error": "too_large", ...}                   a body over data.max_sample_bytes (as base64)
    # GET  http://127.0.0.1:8000/   the export's modalities, member extensions and classes

One sample per request: the members are the bytes a shard holds for one key, base64 in JSON. Requests arriving
together are scored together (``@serve.batch``: up to ``max_batch_size`` samples, waiting at most
``batch_wait_s`` for a batch to fill); each replica runs ``SamplePredictor`` (the run's own preprocessing, then the
model) on the CPU it reserves. A bad sample is answered alone: the batch it came with is scored as usual and the
deployment stays up. On a cluster the same deployment runs on any node (``replicas`` > 1 spreads them); see
docs/after_training.md for running it from ``cluster/``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from ray import serve

DEPLOYMENT = "mm_ray_export"


class ExportServer:
    """The Serve deployment's class (plain until ``serve.deployment`` wraps it in ``serve_export``)."""

    def __init__(
        self,
        directory: str,
        builder: str | None,
        plugins: Sequence[str],
        max_batch_size: int,
        batch_wait_s: float,
    ) -> None:
        from mm_ray.inference.samples import SamplePredictor

        self.predictor = SamplePredictor.open(directory, builder=builder, plugins=plugins)
        self.score.set_max_batch_size(max_batch_size)
        self.score.set_batch_wait_timeout_s(batch_wait_s)
        self.max_body = self.predictor.members.max_sample_bytes * 4 // 3 + 64 * 1024

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def score(self, samples: list[dict[str, bytes]]) -> list[dict[str, Any]]:
        return self.predictor.predict(samples)

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if request.method == "GET":
            return JSONResponse(self.describe())
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return JSONResponse({"error": "too_large", "detail": f"body over {self.max_body} bytes"}, 413)
        body = await request.body()
        if len(body) > self.max_body:
            return JSONResponse({"error": "too_large", "detail": f"body over {self.max_body} bytes"}, 413)
        try:
            sample = parse_sample(body)
        except ValueError as err:
            return JSONResponse({"error": "bad_request", "detail": str(err)}, 400)
        answer = await self.score(sample)
        return JSONResponse(answer, 422 if "error" in answer else 200)

    def describe(self) -> dict[str, Any]:
        p = self.predictor
        return {
            "modalities": list(p.modalities),
            "extensions": dict(p.members.extensions),
            "classes": p.classes,
        }


def parse_sample(body: bytes) -> dict[str, bytes]:
    """``{"members": {ext: base64}}`` -> ``{ext: bytes}``; ``ValueError`` saying what is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"the body is not JSON: {err}") from None
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, dict) or not members:
        raise ValueError('expected {"members": {"<extension>": "<base64 bytes>", ...}}')
    out = {}
    for ext, value in members.items():
        if not isinstance(value, str):
            raise ValueError(f"member {ext!r}: expected a base64 string")
        try:
            out[str(ext).lower()] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"member {ext!r}: not valid base64") from None
    return out


def serve_export(
    directory: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    num_cpus: float = 1.0,
    max_batch_size: int = 16,
    batch_wait_s: float = 0.005,
    builder: str | None = None,
    plugins: Sequence[str] = (),
) -> str:
    """Deploy the export at ``directory`` on the running (or a new local) Ray and return its URL. The export is
    checked on this process first (the trust rule of ``load_exported``: ``builder``/``plugins`` are the caller's)."""
    from mm_ray.inference.export import load_exported

    load_exported(
        directory, builder=builder, plugins=plugins
    )  # refuse foreign code before any replica starts
    serve.start(http_options={"host": host, "port": port})
    server = serve.deployment(ExportServer, name=DEPLOYMENT, num_replicas=replicas,
                              ray_actor_options={"num_cpus": num_cpus})  # fmt: skip
    app = server.bind(str(directory), builder, list(plugins), max_batch_size, batch_wait_s)
    serve.run(app, name=DEPLOYMENT, route_prefix="/")
    return f"http://{host}:{port}/"

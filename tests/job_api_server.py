"""A stand-in for a Ray dashboard's job API on loopback, recording every request a client sends.

    with JobApiServer(token="t0k", statuses=["RUNNING", "FAILED"], logs=["epoch 1\\n"]) as api:
        JobSubmissionClient(api.address, headers={"Authorization": "Bearer t0k"}).submit_job(...)
        api.requests            # [Request(method, path, headers, body), ...] in arrival order

It answers as Ray 2.60's dashboard does (``ray/dashboard/modules/job/job_head.py`` and the package routes):
``/api/version``, package upload (``GET``/``PUT /api/packages/gcs/NAME``), submit (``POST /api/jobs/``),
job info, logs, stop and delete, and the log tail as a websocket (RFC 6455: the handshake, one text frame
per chunk of ``logs``, a normal close). Requests without ``Authorization: Bearer TOKEN`` get 401, a wrong
token 403, like a ``RAY_AUTH_MODE=token`` cluster. ``statuses`` is the job's status at each successive
info request (the last one stays); with ``websocket=False`` the tail is refused (404), as by a proxy that
drops websockets.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import ray

JOB_ID = "raysubmit_test"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclasses.dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    """The JSON body, the raw bytes of an upload, or None."""


class JobApiServer:
    def __init__(
        self,
        *,
        token: str,
        statuses: list[str] = ("SUCCEEDED",),
        logs: list[str] = (),
        message: str = "",
        websocket: bool = True,
    ) -> None:
        self.token, self.statuses, self.logs = token, list(statuses), list(logs)
        self.message, self.websocket = message, websocket
        self.requests: list[Request] = []
        self.packages: dict[str, bytes] = {}
        self.info_requests = 0
        self.last_status = ""
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.address = f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> JobApiServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()

    def status(self) -> str:
        """The job's status at this info request (advancing through ``statuses``)."""
        self.last_status = self.statuses[min(self.info_requests, len(self.statuses) - 1)]
        self.info_requests += 1
        return self.last_status

    def logs_so_far(self) -> str:
        """The job's log at this moment: one more chunk of ``logs`` per info request while it runs, as a
        job writes; all of it once it has ended."""
        ended = self.last_status in ("SUCCEEDED", "FAILED", "STOPPED")
        return "".join(self.logs if ended else self.logs[: self.info_requests])

    def job_details(self) -> dict[str, Any]:
        status = self.status()
        return {
            "type": "SUBMISSION",
            "job_id": "02000000",
            "submission_id": JOB_ID,
            "status": status,
            "entrypoint": "python -m mm_ray.cli.main demo",
            "message": self.message if status == "FAILED" else f"Job is {status.lower()}.",
        }


def _handler(api: JobApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Request:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            is_json = "json" in (self.headers.get("Content-Type") or "")
            body = json.loads(raw) if raw and is_json else (raw or None)
            request = Request(self.command, self.path, dict(self.headers.items()), body)
            api.requests.append(request)
            return request

        def _route(self) -> None:
            request = self._record()
            given = request.headers.get("Authorization")
            if given is None:
                return self._answer(401, "Unauthorized: Missing authentication token")
            if given != f"Bearer {api.token}":
                return self._answer(403, "Forbidden: Invalid authentication token")
            method, path = request.method, request.path.rstrip("/")
            if path == "/api/version":
                return self._answer(200, {"version": "4", "ray_version": ray.__version__, "ray_commit": "x"})
            if path.startswith("/api/packages/gcs/"):
                name = path.rsplit("/", 1)[1]
                if method == "PUT":
                    api.packages[name] = request.body
                    return self._answer(200, {})
                return self._answer(200 if name in api.packages else 404, {})
            if method == "POST" and path == "/api/jobs":
                return self._answer(200, {"job_id": JOB_ID, "submission_id": JOB_ID})
            if path == f"/api/jobs/{JOB_ID}/logs/tail":
                return self._tail() if api.websocket else self._answer(404, "Not Found")
            if path == f"/api/jobs/{JOB_ID}/logs":
                return self._answer(200, {"logs": api.logs_so_far()})
            if path == f"/api/jobs/{JOB_ID}/stop":
                return self._answer(200, {"stopped": True})
            if path == f"/api/jobs/{JOB_ID}" and method == "DELETE":
                if api.statuses[-1] not in ("SUCCEEDED", "FAILED", "STOPPED"):
                    return self._answer(
                        400, f"Attempted to delete job '{JOB_ID}', but it is in a non-terminal state"
                    )
                return self._answer(200, {"deleted": True})
            if path == f"/api/jobs/{JOB_ID}":
                return self._answer(200, api.job_details())
            return self._answer(404, f"Job {path} does not exist")

        do_GET = do_POST = do_PUT = do_DELETE = _route

        def _tail(self) -> None:
            key = self.headers["Sec-WebSocket-Key"]
            accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            for chunk in api.logs:  # unmasked text frames (the server side never masks)
                data = chunk.encode()
                self.wfile.write(bytes([0x81, len(data)]) + data)
            self.wfile.write(bytes([0x88, 2]) + (1000).to_bytes(2, "big"))  # close: normal closure
            self.wfile.flush()
            self.connection.settimeout(5)
            with contextlib.suppress(OSError):
                self.rfile.read(8)  # the client's masked close frame, so it is not cut off mid-write
            self.close_connection = True

    return Handler

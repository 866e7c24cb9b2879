"""A stand-in Ray dashboard on loopback that answers the Job Submission API and records every request.

    with RecordingDashboard() as dash:
        JobSubmissionClient(dash.address, headers=...).submit_job(entrypoint="...", runtime_env={...})
        dash.requests   # [Request(method, path, headers, body), ...] as they arrived on the socket

Real HTTP over a real socket: what Ray's client puts on the wire (headers, the JSON body, the uploaded
working_dir zip) is what the test sees. It answers just enough of the API for ``JobSubmissionClient``:
the version check, "package not there yet" then its upload, and job submission.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ray


@dataclasses.dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class RecordingDashboard:
    """Context manager: a dashboard stub at ``address`` whose ``requests`` lists what it received."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.address = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RecordingDashboard:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        record = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record.append(Request(self.command, self.path, dict(self.headers.items()), body))
                if self.path == "/api/version":
                    self._send(200, {"ray_version": ray.__version__, "version": "4", "session_name": "s"})
                elif self.path.startswith("/api/packages/"):
                    self._send(404 if self.command == "GET" else 200, {})
                elif self.path.rstrip("/") == "/api/jobs" and self.command == "POST":
                    self._send(200, {"submission_id": "raysubmit_recorded", "job_id": None})
                else:
                    self._send(404, {})

            do_GET = do_PUT = do_POST = _answer

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # keep the test output quiet
                pass

        return Handler

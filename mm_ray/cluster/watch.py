"""Following a Ray job until it ends, as ``ray job submit`` does when it waits.

    client = job_client("http://HEAD:8265")
    info = follow_job(client, "raysubmit_XXXX", write=sys.stdout.write)   # its logs, as they come
    info.status, info.message                                          # SUCCEEDED / FAILED / STOPPED, why

The logs stream through Ray's ``JobSubmissionClient.tail_job_logs`` (a websocket). Where the stream cannot
open or breaks before the job ends (a proxy that drops websockets, a dashboard restart), the job is polled
instead: its status, and the part of its logs not yet written, every ``POLL_SECONDS``. Either way the
function returns only once the job's status is terminal (a status lags the end of its log stream by a
moment), with Ray's ``JobDetails`` of the job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
POLL_SECONDS = 1.0

logger = logging.getLogger(__name__)


def follow_job(client: Any, submission_id: str, *, write: Callable[[str], None]) -> Any:
    """Write the job's logs with ``write`` until it ends; returns its final ``JobDetails``."""
    import aiohttp

    written = 0

    async def stream() -> None:
        nonlocal written
        async for chunk in client.tail_job_logs(submission_id):
            write(chunk)
            written += len(chunk)

    try:
        asyncio.run(stream())
    except (aiohttp.ClientError, RuntimeError, OSError) as err:
        logger.warning(
            "the log stream of %s broke (%s); polling it every %g s", submission_id, err, POLL_SECONDS
        )
    while True:
        info = client.get_job_info(submission_id)
        logs = client.get_job_logs(submission_id)
        if len(logs) > written:
            write(logs[written:])
            written = len(logs)
        if str(info.status) in TERMINAL:
            return info
        time.sleep(POLL_SECONDS)

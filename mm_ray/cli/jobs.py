"""``mm-ray submit`` and ``mm-ray jobs``: run mm-ray commands as Ray jobs on a cluster (Job Submission API).

    mm-ray submit --address http://HEAD:8265 -- demo                 # prints the submission id, returns
    mm-ray submit --address http://HEAD:8265 --wait -- train --config pipelines/demo.yaml
    mm-ray submit --address http://HEAD:8265 --entrypoint-num-cpus 1 -- tune --config pipelines/tune_small.yaml
    mm-ray jobs list --address http://HEAD:8265
    mm-ray jobs status ID | logs ID [--follow] | stop ID  --address http://HEAD:8265

``--address`` defaults to ``RAY_ADDRESS``. Authentication (clusters started with ``RAY_AUTH_MODE=token``):
``--token``, ``--token-file``, or the environment (``mm_ray.cluster.auth``). The command after ``--`` is
checked locally first (``mm_ray.cluster.submit``). Several submissions queue side by side on one cluster;
``--entrypoint-num-cpus`` / ``--entrypoint-resources`` reserve each driver's share, and a sweep's
``tune.max_concurrent_trials`` bounds its trials.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mm_ray.cli.report import format_table, write_json
from mm_ray.cluster.auth import HOW_TO_AUTHENTICATE, TokenError, auth_headers, resolve_token
from mm_ray.cluster.submit import SubmitError, plan_job

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="run an mm-ray command as a Ray job on a cluster (`-- COMMAND ...`)")
    _cluster_args(p)
    p.add_argument(
        "--wait", action="store_true", help="follow the job's logs until it ends; exit 1 unless it succeeded"
    )
    p.add_argument("--submission-id", help="the job's id (default: Ray's raysubmit_...)")
    p.add_argument("--entrypoint-num-cpus", type=float, help="CPUs reserved for the job's driver")
    p.add_argument("--entrypoint-resources", type=json.loads, help="custom resources for the driver, as JSON")
    p.add_argument("job", nargs=argparse.REMAINDER, help="-- then the mm-ray command and its arguments")
    p.set_defaults(func=submit_main)

    j = sub.add_parser("jobs", help="list the cluster's jobs, or one job's status, logs, or stop it")
    j.add_argument("action", choices=["list", "status", "logs", "stop"])
    j.add_argument("job_id", nargs="?", help="the submission id (status, logs, stop)")
    j.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    _cluster_args(j)
    j.set_defaults(func=jobs_main)


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="the dashboard, http://HOST:8265")
    p.add_argument("--token", help="the cluster's auth token (RAY_AUTH_MODE=token clusters)")
    p.add_argument("--token-file", help="a file holding the cluster's auth token")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")


class ClusterError(RuntimeError):
    """The cluster could not be reached or refused the request; the message says what to do."""


def client(args: argparse.Namespace) -> Any:
    """A ``JobSubmissionClient`` for ``--address`` with the resolved token; errors say what to fix."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if not args.address or not args.address.startswith(("http://", "https://")):
        raise ClusterError(
            f"--address: the cluster's dashboard URL, e.g. http://HEAD:8265 (got {args.address!r})"
        )
    try:
        token = resolve_token(args.token, args.token_file)
        return JobSubmissionClient(args.address, headers=auth_headers(token))
    except TokenError as err:
        raise ClusterError(str(err)) from None
    except AuthenticationError as err:
        raise ClusterError(
            f"{args.address} refused the request: {_first_line(err)}; {HOW_TO_AUTHENTICATE}"
        ) from None
    except ConnectionError as err:
        raise ClusterError(f"{args.address}: cannot reach the cluster's dashboard ({err})") from None


def submit_main(args: argparse.Namespace) -> int:
    try:
        job = plan_job(args.job, project_root=Path.cwd())
        c = client(args)
        submission_id = c.submit_job(
            entrypoint=job.entrypoint,
            runtime_env=job.runtime_env,
            submission_id=args.submission_id,
            entrypoint_num_cpus=args.entrypoint_num_cpus,
            entrypoint_resources=args.entrypoint_resources,
        )
    except (SubmitError, ClusterError) as err:
        print(f"mm-ray submit: {err}", file=sys.stderr)
        return 2
    print(f"submitted {submission_id}: {job.entrypoint}")
    print(f"  watch: mm-ray jobs logs {submission_id} --follow --address {args.address}")
    result: dict[str, Any] = {"submission_id": submission_id, "entrypoint": job.entrypoint}
    code = 0
    if args.wait:
        result["status"] = follow(c, submission_id)
        print(f"job {submission_id}: {result['status']}")
        code = 0 if result["status"] == "SUCCEEDED" else 1
    write_json(args.json, result)
    return code


def jobs_main(args: argparse.Namespace) -> int:
    try:
        if args.action != "list" and not args.job_id:
            raise ClusterError(f"jobs {args.action}: name the job (its submission id)")
        c = client(args)
        if args.action == "list":
            jobs = c.list_jobs()
            rows = [[j.submission_id, str(j.status), j.entrypoint[:80]] for j in jobs]
            print(format_table(["submission id", "status", "entrypoint"], rows))
            write_json(
                args.json,
                {
                    "jobs": [
                        dict(zip(("submission_id", "status", "entrypoint"), r, strict=True)) for r in rows
                    ]
                },
            )
        elif args.action == "status":
            status = str(c.get_job_status(args.job_id))
            print(f"{args.job_id}: {status}")
            write_json(args.json, {"submission_id": args.job_id, "status": status})
        elif args.action == "logs":
            if args.follow:
                follow(c, args.job_id)
            else:
                print(c.get_job_logs(args.job_id), end="")
        else:
            stopped = c.stop_job(args.job_id)
            print(f"{args.job_id}: {'stop requested' if stopped else 'not running'}")
    except ClusterError as err:
        print(f"mm-ray jobs: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # e.g. an unknown job id: Ray's message names it
        print(f"mm-ray jobs: {_first_line(err)}", file=sys.stderr)
        return 2
    return 0


def follow(c: Any, submission_id: str) -> str:
    """Stream the job's logs to stdout until it ends; returns its final status."""

    async def tail() -> None:
        async for lines in c.tail_job_logs(submission_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())
    # The log stream closes when the job ends; its status may take a moment to be final.
    for _ in range(30):
        status = str(c.get_job_status(submission_id))
        if status in TERMINAL:
            return status
        time.sleep(1.0)
    return status


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]

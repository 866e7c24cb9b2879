"""``mm-ray submit`` and ``mm-ray jobs``: run mm-ray commands as Ray jobs on a cluster (Job Submission API).

    mm-ray submit --address http://HEAD:8265 -- demo                 # follows the logs, exit 1 if it fails
    mm-ray submit --address http://HEAD:8265 --no-wait -- train --config pipelines/demo.yaml   # id, return
    mm-ray submit --entrypoint-num-cpus 1 --entrypoint-num-gpus 1 --entrypoint-memory 8000000000 -- tune ...
    mm-ray submit --runtime-env-json '{"env_vars": {"HF_HOME": "/mnt/hf"}}' -- demo   # or --runtime-env FILE
    mm-ray jobs list --address http://HEAD:8265
    mm-ray jobs status ID | logs ID [--follow] | stop ID | delete ID  --address http://HEAD:8265

As ``ray job submit``: waits by default (streams the job's logs until it ends; exit 1 unless it
succeeded), ``--no-wait`` prints the submission id and returns. ``--address`` defaults to ``RAY_ADDRESS``.
Authentication (clusters started with ``RAY_AUTH_MODE=token``): ``--token-file`` or the environment
(``mm_ray.cluster.auth``). The command after ``--`` is parsed by this very command line and checked by
``mm_ray.cluster.submit`` before anything is sent; only an allow-list of project files travels, and a
runtime env of yours is merged with it (``mm_ray.cluster.runtime_env``). Several submissions queue side by
side on one cluster; ``--entrypoint-*`` reserve each driver's share, and a sweep's
``tune.max_concurrent_trials`` bounds its trials.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from mm_ray.cli.common import write_json
from mm_ray.cluster.runtime_env import RuntimeEnvError, load_runtime_env
from mm_ray.cluster.submit import ClusterError, SubmitError, first_line, job_client, submit
from mm_ray.cluster.watch import follow_job
from mm_ray.tables import format_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="run an mm-ray command as a Ray job on a cluster (`-- COMMAND ...`)")
    _cluster_args(p)
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow the job's logs until it ends and exit 1 unless it succeeded (the default, as `ray job "
        "submit`); --no-wait prints the submission id and returns",
    )
    p.add_argument("--submission-id", help="the job's id (default: Ray's raysubmit_...)")
    p.add_argument("--entrypoint-num-cpus", type=float, help="CPUs reserved for the job's driver")
    p.add_argument("--entrypoint-num-gpus", type=float, help="GPUs reserved for the job's driver")
    p.add_argument("--entrypoint-memory", type=int, metavar="BYTES", help="memory reserved for the driver")
    p.add_argument("--entrypoint-resources", type=json.loads, help="custom resources for the driver, as JSON")
    env = p.add_mutually_exclusive_group()
    env.add_argument(
        "--runtime-env-json",
        metavar="JSON",
        help="a Ray runtime env merged with the project's upload (env_vars merged; working_dir is the upload)",
    )
    env.add_argument("--runtime-env", metavar="FILE", help="the same, from a YAML or JSON file")
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATH",
        help="also upload this project file or directory (the package and pipelines/ always travel)",
    )
    p.add_argument("job", nargs=argparse.REMAINDER, help="-- then the mm-ray command and its arguments")
    p.set_defaults(func=submit_main)

    j = sub.add_parser("jobs", help="list the cluster's jobs, or one job's status or logs; stop or delete it")
    j.add_argument("action", choices=["list", "status", "logs", "stop", "delete"])
    j.add_argument("job_id", nargs="?", help="the submission id (status, logs, stop, delete)")
    j.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    _cluster_args(j)
    j.set_defaults(func=jobs_main)


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="the dashboard, http://HOST:8265")
    p.add_argument(
        "--token",
        action=_DeprecatedToken,
        help="deprecated: a token on the command line shows in `ps` to every user of the machine; "
        "use --token-file or RAY_AUTH_TOKEN",
    )
    p.add_argument(
        "--token-file", help="a file holding the cluster's auth token (RAY_AUTH_MODE=token clusters)"
    )
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")


class _DeprecatedToken(argparse.Action):
    """``--token T``: still accepted, with a warning on stderr (the process list shows it to everyone)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(
            "warning: --token is deprecated: a token on the command line is visible in the process list; "
            "use --token-file PATH or the RAY_AUTH_TOKEN environment variable",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def check_command(args: argparse.Namespace, argv: list[str]) -> None:
    """Parse the job's command exactly as ``mm-ray`` would (the parser main handed over)."""
    stderr = io.StringIO()
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        return  # the library says what is missing
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            args.parse_command(command)
    except SystemExit as err:
        complaint = stderr.getvalue().strip().splitlines()
        reason = complaint[-1] if complaint else f"exit {err.code}"
        raise SubmitError(f"not a valid mm-ray command: mm-ray {shlex.join(command)}: {reason}") from None


def submit_main(args: argparse.Namespace) -> int:
    try:
        check_command(args, args.job)
        submission_id = submit(
            args.job,
            address=args.address,
            token=args.token,
            token_file=args.token_file,
            project_root=Path.cwd(),
            include=args.include,
            submission_id=args.submission_id,
            entrypoint_num_cpus=args.entrypoint_num_cpus,
            entrypoint_num_gpus=args.entrypoint_num_gpus,
            entrypoint_memory=args.entrypoint_memory,
            entrypoint_resources=args.entrypoint_resources,
            runtime_env=load_runtime_env(args.runtime_env_json, args.runtime_env),
        )
    except (SubmitError, ClusterError, RuntimeEnvError) as err:
        print(f"mm-ray submit: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # the cluster refused the job, e.g. a submission id already used
        print(f"mm-ray submit: {first_line(err)}", file=sys.stderr)
        return 2
    # What the cluster runs (a command holding a credential was refused before anything was sent).
    command = args.job[1:] if args.job[:1] == ["--"] else list(args.job)
    print(f"submitted {submission_id}: mm-ray {shlex.join(command)}", flush=True)
    result: dict[str, Any] = {"submission_id": submission_id, "command": command}
    code = 0
    if args.wait:
        print("following its logs until it ends (--no-wait returns at once)", flush=True)
        try:
            info = follow(
                job_client(args.address, token=args.token, token_file=args.token_file), submission_id
            )
        except (RuntimeError, OSError) as err:  # the cluster went away: the job may still be running there
            print(f"mm-ray submit: lost track of {submission_id}: {first_line(err)}", file=sys.stderr)
            return 2
        result["status"] = str(info.status)
        print(f"job {submission_id}: {result['status']}")
        if result["status"] != "SUCCEEDED":
            code = 1
            if info.message:
                print(f"  {info.message}")
    else:
        print(f"  watch: mm-ray jobs logs {submission_id} --follow --address {args.address}")
    write_json(args.json, result)
    return code


def jobs_main(args: argparse.Namespace) -> int:
    try:
        if args.action != "list" and not args.job_id:
            raise ClusterError(f"jobs {args.action}: name the job (its submission id)")
        c = job_client(args.address, token=args.token, token_file=args.token_file)
        if args.action == "list":
            jobs = c.list_jobs()
            rows = [[j.submission_id, str(j.status), j.entrypoint[:80]] for j in jobs]
            print(format_table(["submission id", "status", "entrypoint"], rows))
            keys = ("submission_id", "status", "entrypoint")
            write_json(args.json, {"jobs": [dict(zip(keys, r, strict=True)) for r in rows]})
        elif args.action == "status":
            status = str(c.get_job_status(args.job_id))
            print(f"{args.job_id}: {status}")
            write_json(args.json, {"submission_id": args.job_id, "status": status})
        elif args.action == "logs":
            if args.follow:
                follow(c, args.job_id)
            else:
                print(c.get_job_logs(args.job_id), end="")
        elif args.action == "stop":
            stopped = c.stop_job(args.job_id)
            print(f"{args.job_id}: {'stop requested' if stopped else 'not running'}")
        else:
            deleted = c.delete_job(args.job_id)
            print(f"{args.job_id}: {'deleted' if deleted else 'not deleted'}")
    except ClusterError as err:
        print(f"mm-ray jobs: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # e.g. an unknown job id, or deleting a running job: Ray's message says
        print(f"mm-ray jobs: {first_line(err)}", file=sys.stderr)
        return 2
    return 0


def follow(client: Any, submission_id: str) -> Any:
    """Stream the job's logs to stdout until it ends; returns its final ``JobDetails``."""
    return follow_job(client, submission_id, write=lambda text: print(text, end="", flush=True))

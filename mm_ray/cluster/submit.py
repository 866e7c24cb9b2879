"""What ``mm-ray submit`` sends to a cluster: a checked ``mm-ray`` command and its runtime environment.

    job = plan_job(["tune", "--config", "pipelines/tune_small.yaml"], project_root=Path.cwd())
    client.submit_job(entrypoint=job.entrypoint, runtime_env=job.runtime_env)

The job's working directory is the project checkout, uploaded by Ray (so the job runs this checkout's code
and configs: Ray puts the working directory first on the job's ``sys.path``), minus what must not travel:
version control, virtual environments, run outputs, datasets and caches (Ray caps an upload at 100 MiB).
The packages the code imports (Ray, torch, ...) come from the cluster's own installation: every node
needs the project's pinned dependencies installed (``cluster/README.md``).

Before anything is sent the command is parsed exactly as ``mm-ray`` would parse it, and every config file it
names must exist inside the working directory (else it would not travel with it): mistakes fail here, with
the argument named, rather than minutes later on the cluster.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

UPLOAD_EXCLUDES = [
    ".git",
    "/.venv/",
    "/venv/",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "/runs/",
    "/data/",
    "*.tar",
    "*.parquet",
    "*.egg-info",
]
"""Never uploaded with the working directory: VCS, environments, outputs, datasets and caches. Ray reads
these as .gitignore patterns: a leading ``/`` anchors at the project root, so ``/data/`` leaves out a
top-level data directory but not the ``mm_ray/data`` package."""

FILE_FLAGS = ("--config", "--space")
"""Options whose value is a file the job reads."""

FILE_KEYS = ("tune.space",)
"""``key=value`` overrides whose value is a file the job reads."""


class SubmitError(ValueError):
    """The command cannot be submitted as it is; the message names the argument at fault."""


@dataclasses.dataclass(frozen=True)
class Job:
    """A checked job: the entrypoint the cluster runs and the runtime environment it runs in."""

    argv: list[str]
    entrypoint: str
    runtime_env: dict[str, Any]


def plan_job(argv: Sequence[str], *, project_root: Path, env_vars: dict[str, str] | None = None) -> Job:
    """Check ``argv`` (an ``mm-ray`` command without the program name) and build its job."""
    argv = list(argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise SubmitError("no command to submit: put an mm-ray command after `--`, e.g. `-- demo`")
    if argv[0] in ("submit", "jobs"):
        raise SubmitError(f"`{argv[0]}` runs on your machine, not on the cluster")
    check_command(argv)
    for name, path in named_files(argv):
        check_file(name, path, project_root)
    runtime_env: dict[str, Any] = {"working_dir": str(project_root), "excludes": list(UPLOAD_EXCLUDES)}
    if env_vars:
        runtime_env["env_vars"] = dict(env_vars)
    entrypoint = shlex.join(["python", "-m", "mm_ray.cli.main", *argv])
    return Job(argv, entrypoint, runtime_env)


def check_command(argv: list[str]) -> None:
    """Parse ``argv`` as ``mm-ray`` would; raise ``SubmitError`` with argparse's complaint if it fails."""
    import contextlib
    import io

    from mm_ray.cli.main import parse_args

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parse_args(argv)
    except SystemExit as err:
        complaint = stderr.getvalue().strip().splitlines()
        reason = complaint[-1] if complaint else f"exit {err.code}"
        raise SubmitError(f"not a valid mm-ray command: mm-ray {shlex.join(argv)}: {reason}") from None


def named_files(argv: list[str]) -> list[tuple[str, str]]:
    """The (argument, path) pairs of the files ``argv`` names: ``--config F``, ``--space F``, ``tune.space=F``."""
    found = []
    for i, word in enumerate(argv):
        if word in FILE_FLAGS and i + 1 < len(argv):
            found.append((word, argv[i + 1]))
        for flag in FILE_FLAGS:
            if word.startswith(flag + "="):
                found.append((flag, word.split("=", 1)[1]))
        key, _, value = word.partition("=")
        if key in FILE_KEYS and value:
            found.append((key, value))
    return found


def is_excluded(relative: Path) -> bool:
    """Whether ``relative`` (a path inside the project) matches ``UPLOAD_EXCLUDES`` (.gitignore style)."""
    for pattern in UPLOAD_EXCLUDES:
        name = pattern.strip("/")
        if pattern.startswith("/"):
            if relative.parts and fnmatch.fnmatch(relative.parts[0], name):
                return True
        elif any(fnmatch.fnmatch(part, name) for part in relative.parts):
            return True
    return False


def check_file(name: str, path: str, project_root: Path) -> None:
    """``path`` (relative to the project root, as the job will see it) must be a file inside the root."""
    root = project_root.resolve()
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root):
        raise SubmitError(
            f"{name} {path}: outside the project directory {root}, so it would not reach the cluster; "
            "copy it into the project (e.g. pipelines/)"
        )
    if not resolved.is_file():
        raise SubmitError(f"{name} {path}: no such file in the project directory {root}")
    if is_excluded(resolved.relative_to(root)):
        raise SubmitError(f"{name} {path}: excluded from the upload ({', '.join(UPLOAD_EXCLUDES)}); move it")

"""What ``mm-ray submit`` sends to a cluster: a checked ``mm-ray`` command and its runtime environment.

    job = plan_job(["tune", "--config", "pipelines/tune_small.yaml"], project_root=Path.cwd())
    client.submit_job(entrypoint=job.entrypoint, runtime_env=job.runtime_env)

Dependencies come from the cluster, code and configs from this checkout. Every node of an mm_ray cluster
has the project installed with its pinned dependencies (``pip install -e .``, or the container image; see
``cluster/``), so the job needs no ``pip`` runtime env, which would reinstall torch and Ray per job. The
checkout is uploaded as the job's ``working_dir`` and the entrypoint is ``python -m mm_ray.cli.main``, run
from that directory: the job runs the code and ``pipelines/`` you have here, not whatever the nodes hold.
What must not travel is excluded (Ray caps an upload at 100 MiB and also skips what ``.gitignore`` lists):
version control, virtual environments, run outputs, datasets and caches.

Before anything is sent the command is parsed exactly as ``mm-ray`` would parse it, its config is loaded
(unknown keys fail here), and every file it names must exist inside the working directory, since only
that travels: mistakes fail at once with the argument named, not minutes later on the cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Gitignore-style patterns relative to the working dir, as Ray matches them. Anchored with a leading `/`
# where a name is also a package (`data` would otherwise drop `mm_ray/data/`).
UPLOAD_EXCLUDES = [
    ".git/",
    ".venv/",
    "venv/",
    ".tox/",
    "__pycache__/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.egg-info/",
    "/runs/",
    "/data/",
    "/out/",
    "*.tar",
    "*.parquet",
    "*.ckpt",
    "*.pt",
]
"""Never uploaded with the working directory: VCS, environments, caches, outputs and datasets."""

# Jobs stream their logs; without this Python buffers a job's stdout and `mm-ray jobs logs --follow`
# shows nothing until a 4 KiB buffer fills.
JOB_ENV_VARS = {"PYTHONUNBUFFERED": "1"}

LOCAL_ONLY = ("submit", "jobs")


class SubmitError(ValueError):
    """The command cannot be submitted as it is; the message names the argument at fault."""


@dataclasses.dataclass(frozen=True)
class Job:
    """A checked job: the entrypoint the cluster runs and the runtime environment it runs in."""

    argv: list[str]
    entrypoint: str
    runtime_env: dict[str, Any]


def plan_job(argv: Sequence[str], *, project_root: Path) -> Job:
    """Check ``argv`` (an ``mm-ray`` command without the program name) and build its job."""
    argv = list(argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise SubmitError("no command to submit: put an mm-ray command after `--`, e.g. `-- demo`")
    if argv[0] in LOCAL_ONLY:
        raise SubmitError(f"`{argv[0]}` runs on your machine, not on the cluster")
    args = parse_command(argv)
    for name, path in named_files(args):
        check_file(name, path, project_root)
    space = space_in_config(args, project_root)
    if space:
        check_file(f"tune.space (set in --config {args.config})", space, project_root)
    runtime_env = {
        "working_dir": str(project_root),
        "excludes": list(UPLOAD_EXCLUDES),
        "env_vars": dict(JOB_ENV_VARS),
    }
    entrypoint = shlex.join(["python", "-m", "mm_ray.cli.main", *argv])
    return Job(argv, entrypoint, runtime_env)


def parse_command(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` as ``mm-ray`` would; ``SubmitError`` with argparse's complaint if it fails."""
    from mm_ray.cli.main import parse_args

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return parse_args(argv)
    except SystemExit as err:
        complaint = stderr.getvalue().strip().splitlines()
        reason = complaint[-1] if complaint else f"exit {err.code}"
        raise SubmitError(f"not a valid mm-ray command: mm-ray {shlex.join(argv)}: {reason}") from None


def named_files(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (argument, path) pairs of the files a parsed command names: ``--config``, ``--space``, ``tune.space=``."""
    found = [(f"--{name}", getattr(args, name)) for name in ("config", "space") if getattr(args, name, None)]
    found += [
        ("tune.space", word.split("=", 1)[1]) for word in _overrides(args) if word.startswith("tune.space=")
    ]
    return found


def space_in_config(args: argparse.Namespace, project_root: Path) -> str | None:
    """The search space a config-driven command reads from its config file, when nothing else names one.

    Loading the config here also fails unknown keys and bad values before submission.
    """
    from mm_ray.config.load import ConfigError, load_config

    if not hasattr(args, "config"):
        return None
    overrides = _overrides(args)
    try:
        cfg = load_config(project_root / args.config if args.config else None, overrides)
    except ConfigError as err:
        raise SubmitError(f"config error: {err}") from None
    named = getattr(args, "space", None) or any(w.startswith("tune.space=") for w in overrides)
    return None if named else cfg.tune.space


def _overrides(args: argparse.Namespace) -> list[str]:
    from mm_ray.cli.common import split_overrides
    from mm_ray.cli.main import WORDS_DEST

    words = getattr(args, WORDS_DEST.get(args.command, ""), None) or []
    return split_overrides(list(words))[1]


def check_file(name: str, path: str, project_root: Path) -> None:
    """``path`` (relative to the project root, as the job will see it) must be a file that is uploaded."""
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
        raise SubmitError(f"{name} {path}: excluded from the upload ({' '.join(UPLOAD_EXCLUDES)}); move it")


def is_excluded(relative: Path) -> bool:
    """Whether Ray leaves ``relative`` (a path inside the working dir) out of the upload."""
    # Ray's own matcher (a vendored pathspec), so this answers exactly as the upload will.
    from ray._private.thirdparty.pathspec import PathSpec

    spec = PathSpec.from_lines("gitwildmatch", UPLOAD_EXCLUDES)
    return spec.match_file(str(relative))

"""Running an ``mm-ray`` command as a Ray job on a cluster (the Job Submission API).

    import mm_ray

    job_id = mm_ray.submit(["tune", "--config", "pipelines/tune_small.yaml"], address="http://HEAD:8265",
                           entrypoint_num_gpus=1, runtime_env={"env_vars": {"HF_HOME": "/mnt/hf"}})
    follow_job(job_client("http://HEAD:8265"), job_id, write=sys.stdout.write)   # cluster.watch: until it ends

    job = plan_job(["train", "--config", "pipelines/demo.yaml"], project_root=Path.cwd())   # the check alone
    job.entrypoint, job.files          # what the cluster runs, and the files that travel

Dependencies come from the cluster, code and configs from this checkout. Every node of an mm_ray cluster
has the project installed with its pinned dependencies (``pip install -e .``, or the container image; see
``cluster/``), so the job needs no ``pip`` runtime env, which would reinstall torch and Ray per job. The
entrypoint is ``python -m mm_ray.cli.main``, run from the job's working directory: the job runs the code and
``pipelines/`` you have here, not whatever the nodes hold.

What travels is an allow-list, never "the checkout minus some patterns": the ``mm_ray`` package's Python
files, ``pipelines/``'s YAML, ``pyproject.toml`` and ``README.md``, the files the command names (``--config``,
``--space``, ``tune.space``) and what ``include`` adds. Symbolic links are never followed: a link (to a file
or a directory, inside the project or out of it) does not travel, nor what it points at, and a named file
that is a link, or lies under one, is refused. They are copied into a staging directory that is
uploaded as the job's ``working_dir``, so a ``.env``, a key file or a dataset lying in the checkout never
leaves the machine. A runtime env of the caller's is merged with it (``mm_ray.cluster.runtime_env``).
Credentials (``data.storage_options`` access and secret keys, session tokens, a password in a URL) never
travel: a command or an uploaded file holding one is refused, naming the key (``mm_ray.cluster.secrets``); the
cluster's nodes read object storage with their own credentials.

Before anything is sent the command's config is loaded (unknown keys fail here) and every file it names
must exist inside the project directory: mistakes fail at once with the argument named, not minutes later
on the cluster. (``mm-ray submit`` also parses the command with the real command-line parser first.)
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mm_ray.cluster.auth import HOW_TO_AUTHENTICATE, TokenError, auth_headers, resolve_token
from mm_ray.cluster.runtime_env import RuntimeEnvError, merge_runtime_env
from mm_ray.cluster.secrets import credentials_in_argv, credentials_in_file, refusal
from mm_ray.commands import FILE_OPTIONS, command, overrides

UPLOAD_ALLOW = (
    ("mm_ray", ("*.py",)),
    ("pipelines", ("*.yaml", "*.yml")),
    (".", ("pyproject.toml", "README.md")),
)
"""(directory, file patterns) of the project that a job gets: the package and the named pipelines."""

UPLOAD_LIMIT_BYTES = 100 * 1024 * 1024
"""Ray refuses a ``working_dir`` above 100 MiB."""

CONFIG_SCAN_BYTES = 4 * 1024 * 1024
"""Uploaded files up to this size are read as configs for credentials (a config file the command names always
is): larger ones that ``--include`` adds are data, not settings."""

# Jobs stream their logs; without this Python buffers a job's stdout and `mm-ray jobs logs --follow`
# shows nothing until a 4 KiB buffer fills.
JOB_ENV_VARS = {"PYTHONUNBUFFERED": "1"}


class SubmitError(ValueError):
    """The command cannot be submitted as it is; the message names the argument at fault."""


class ClusterError(RuntimeError):
    """The cluster could not be reached or refused the request; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Job:
    """A checked job: the entrypoint the cluster runs, the project files that travel, the job's environment."""

    argv: list[str]
    entrypoint: str
    files: list[str]
    """Project-relative paths copied into the job's working directory."""
    env_vars: dict[str, str]

    def runtime_env(self, working_dir: str) -> dict[str, Any]:
        return {"working_dir": working_dir, "env_vars": dict(self.env_vars)}


def plan_job(argv: Sequence[str], *, project_root: Path, include: Sequence[str] = ()) -> Job:
    """Check ``argv`` (an ``mm-ray`` command without the program name) and build its job."""
    argv = list(argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise SubmitError("no command to submit: put an mm-ray command after `--`, e.g. `-- demo`")
    try:
        spec = command(argv[0])
    except KeyError as err:
        raise SubmitError(str(err.args[0])) from None
    if spec.local_only:
        raise SubmitError(f"`{argv[0]}` runs on your machine, not on the cluster")
    root = project_root.resolve()
    named = named_files(argv)
    for name, path in named:
        check_file(name, path, root)
    config = dict(named).get("--config")
    if spec.loads_config:
        space = space_in_config(argv, root, config)
        if space:
            check_file(f"tune.space (set in --config {config})", space, root)
            named.append(("tune.space", space))
    extra = []
    for path in include:
        extra += _included(path, root)
    files = sorted({*allowed_files(root), *(_relative(p, root) for _, p in named), *extra})
    # Credentials never travel: the entrypoint is shown to everyone who can list the cluster's jobs.
    found = credentials_in_argv(argv)
    configs = {_relative(p, root) for _, p in named}
    for relative in files:
        path = root / relative
        if relative in configs or (not relative.endswith(".py") and path.stat().st_size <= CONFIG_SCAN_BYTES):
            found += credentials_in_file(path.read_text(errors="replace"), relative)
    if found:
        raise SubmitError(refusal(found))
    entrypoint = shlex.join(["python", "-m", "mm_ray.cli.main", *argv])
    return Job(argv, entrypoint, files, dict(JOB_ENV_VARS))


def named_files(argv: Sequence[str]) -> list[tuple[str, str]]:
    """The (argument, path) pairs of the files a command names: ``--config``, ``--space``, ``tune.space=``."""
    found = []
    words = list(argv)
    for i, word in enumerate(words):
        option, eq, value = word.partition("=")
        if option in FILE_OPTIONS:
            value = value if eq else (words[i + 1] if i + 1 < len(words) else "")
            if not value:
                raise SubmitError(f"{option}: needs a file")
            found.append((FILE_OPTIONS[option], value))
        elif word.startswith("tune.space=") and word.partition("=")[2]:
            found.append(("tune.space", word.partition("=")[2]))
    return found


def overrides_of(argv: Sequence[str]) -> list[str]:
    """The ``key=value`` words of a command (not option values), read with the CLI's own grammar."""
    return overrides(argv)


def space_in_config(argv: Sequence[str], root: Path, config: str | None) -> str | None:
    """The search space a command reads from its config file, when nothing else names one.

    Loading the config here also fails unknown keys and bad values before submission.
    """
    from mm_ray.config.load import ConfigError
    from mm_ray.settings import load_config

    overrides = overrides_of(argv)
    try:
        cfg = load_config(root / config if config else None, overrides)
    except ConfigError as err:
        raise SubmitError(f"config error: {err}") from None
    named = any(name in ("--space", "tune.space") for name, _ in named_files(argv))
    return None if named else cfg.tune.space


def check_file(name: str, path: str, root: Path) -> None:
    """``path`` (relative to the project root, as the job will see it) must be a file inside the project,
    reached without a symbolic link."""
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root):
        raise SubmitError(
            f"{name} {path}: outside the project directory {root}, so it would not reach the cluster; "
            "copy it into the project (e.g. pipelines/)"
        )
    if not resolved.is_file():
        raise SubmitError(f"{name} {path}: no such file in the project directory {root}")
    _refuse_links(name, path, root)


def allowed_files(root: Path) -> list[str]:
    """The project files every job gets (``UPLOAD_ALLOW``), relative to ``root``; links are left out."""
    found = []
    for directory, patterns in UPLOAD_ALLOW:
        base = root / directory
        if base.is_symlink() or not base.is_dir():  # a linked pipelines/ may point anywhere
            continue
        for path in _plain_files(base) if directory != "." else (p for p in base.iterdir() if _plain(p)):
            if any(path.match(pattern) for pattern in patterns) and "__pycache__" not in path.parts:
                found.append(path.relative_to(root).as_posix())
    return found


def _included(path: str, root: Path) -> list[str]:
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root) or not resolved.exists():
        raise SubmitError(f"--include {path}: not a file or directory inside the project directory {root}")
    _refuse_links("--include", path, root)
    if resolved.is_file():
        return [resolved.relative_to(root).as_posix()]
    return [p.relative_to(root).as_posix() for p in _plain_files(resolved)]


def _plain_files(directory: Path) -> list[Path]:
    """The regular files under ``directory``, never through a link (links to files are left out too)."""
    out = []
    for parent, _dirs, files in os.walk(directory, followlinks=False):  # a linked directory is not entered
        out += [Path(parent) / name for name in files if _plain(Path(parent) / name)]
    return out


def _plain(path: Path) -> bool:
    return not path.is_symlink() and path.is_file()


def _refuse_links(name: str, path: str, root: Path) -> None:
    """``SubmitError`` when ``path`` (inside the resolved ``root``) is a symbolic link or lies under one."""
    plain = Path(os.path.normpath(root / path))
    if plain.resolve() != plain:  # root is resolved: only a link below it makes the two differ
        raise SubmitError(
            f"{name} {path}: a symbolic link, or under one; links are never followed into the upload (they "
            "may point anywhere): copy the file into the project instead"
        )


def _relative(path: str, root: Path) -> str:
    return (root / path).resolve().relative_to(root).as_posix()


def stage(job: Job, root: Path, into: Path) -> Path:
    """Copy the job's files from ``root`` into ``into`` (its working directory); returns ``into``."""
    total = 0
    for relative in job.files:
        source, target = root / relative, into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)  # plan_job lists no link; never copy a target
        total += target.stat().st_size
    if total > UPLOAD_LIMIT_BYTES:
        raise SubmitError(f"the upload is {total / 2**20:.0f} MiB, over Ray's 100 MiB working_dir limit")
    return into


def job_client(address: str | None, *, token: str | None = None, token_file: str | None = None) -> Any:
    """A ``JobSubmissionClient`` for the dashboard at ``address`` with the resolved auth token
    (``mm_ray.cluster.auth``); ``ClusterError`` saying what to fix."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if not address or not address.startswith(("http://", "https://")):
        raise ClusterError(f"--address: the cluster's dashboard URL, e.g. http://HEAD:8265 (got {address!r})")
    try:
        return JobSubmissionClient(address, headers=auth_headers(resolve_token(token, token_file)))
    except TokenError as err:
        raise ClusterError(str(err)) from None
    except AuthenticationError as err:
        raise ClusterError(
            f"{address} refused the request: {first_line(err)}; {HOW_TO_AUTHENTICATE}"
        ) from None
    except ConnectionError as err:
        raise ClusterError(f"{address}: cannot reach the cluster's dashboard ({err})") from None


def submit(
    command: Sequence[str],
    *,
    address: str | None,
    token: str | None = None,
    token_file: str | None = None,
    project_root: str | Path = ".",
    include: Sequence[str] = (),
    submission_id: str | None = None,
    entrypoint_num_cpus: float | None = None,
    entrypoint_num_gpus: float | None = None,
    entrypoint_memory: int | None = None,
    entrypoint_resources: Mapping[str, float] | None = None,
    runtime_env: Mapping[str, Any] | None = None,
) -> str:
    """Submit the ``mm-ray`` command ``command`` (e.g. ``["train", "--config", "pipelines/demo.yaml"]``) as a
    Ray job on the cluster whose dashboard is ``address``; returns its submission id at once (follow the
    job with ``mm_ray.cluster.watch.follow_job``).

    ``entrypoint_*`` reserve resources for the job's driver (memory in bytes), as in ``ray job submit``.
    ``runtime_env`` is merged with the project's upload by ``mm_ray.cluster.runtime_env``'s rules.
    Raises ``SubmitError`` (the command or runtime env, naming the argument or key) or ``ClusterError``
    (the cluster) before anything runs remotely; a credential in the command or its files is a ``SubmitError``
    naming it: the cluster's nodes supply their own (``mm_ray.cluster.secrets``).
    """
    root = Path(project_root).resolve()
    job = plan_job(command, project_root=root, include=include)
    with tempfile.TemporaryDirectory(prefix="mm_ray-job-") as staging:
        try:
            env = merge_runtime_env(runtime_env or {}, job.runtime_env(str(stage(job, root, Path(staging)))))
        except RuntimeEnvError as err:
            raise SubmitError(str(err)) from None
        client = job_client(address, token=token, token_file=token_file)
        # submit_job uploads the directory before it returns, so the staging copy can go afterwards.
        return client.submit_job(
            entrypoint=job.entrypoint,
            runtime_env=env,
            submission_id=submission_id,
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_num_gpus=entrypoint_num_gpus,
            entrypoint_memory=entrypoint_memory,
            entrypoint_resources=dict(entrypoint_resources) if entrypoint_resources else None,
        )


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]

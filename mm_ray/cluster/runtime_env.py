"""A job's runtime environment: yours (``--runtime-env-json`` / ``--runtime-env FILE``, as ``ray job submit``
takes them) merged with what ``mm-ray submit`` itself sends.

    mine = load_runtime_env(json_text='{"env_vars": {"HF_HOME": "/mnt/hf"}, "config": {"setup_timeout_seconds": 900}}')
    merge_runtime_env(mine, {"working_dir": "/tmp/staged", "env_vars": {"PYTHONUNBUFFERED": "1"}})
    # {"env_vars": {"HF_HOME": "/mnt/hf", "PYTHONUNBUFFERED": "1"}, "config": {...}, "working_dir": "/tmp/staged"}

How the two combine:

- ``working_dir`` is always the project's allow-list upload (``mm_ray.cluster.submit``); one of yours is
  replaced, with a warning naming it (``ray job submit --working-dir`` overrides the runtime env's the same
  way). Extra project files travel with ``--include``.
- ``env_vars`` are merged; a variable both set to different values is an error naming ``env_vars.NAME``.
- ``py_modules`` may name remote URIs only: a local directory would be uploaded whole, around the
  allow-list (put local code in the project and ``--include`` it; the working directory is importable).
- Everything else (``pip``, ``uv``, ``conda``, ``container``, ``config``, ``excludes``, ...) goes to Ray
  as you wrote it; Ray's own ``RuntimeEnv`` checks it here, before anything is uploaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)


class RuntimeEnvError(ValueError):
    """A runtime environment that cannot be sent; the message names the flag or key at fault."""


def load_runtime_env(json_text: str | None = None, path: str | Path | None = None) -> dict[str, Any]:
    """The runtime env of ``--runtime-env-json JSON`` or ``--runtime-env FILE`` (YAML or JSON), or ``{}``."""
    if json_text is not None and path is not None:
        raise RuntimeEnvError("--runtime-env and --runtime-env-json: give one of them, not both")
    if json_text is not None:
        source = "--runtime-env-json"
        try:
            env = json.loads(json_text)
        except json.JSONDecodeError as err:
            raise RuntimeEnvError(f"{source}: not JSON ({err})") from None
    elif path is not None:
        source = f"--runtime-env {path}"
        try:
            env = yaml.safe_load(Path(path).read_text())
        except OSError as err:
            raise RuntimeEnvError(f"{source}: cannot read it ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise RuntimeEnvError(f"{source}: not YAML ({err})") from None
    else:
        return {}
    if not isinstance(env, dict):
        raise RuntimeEnvError(f"{source}: a runtime env is a mapping (got {type(env).__name__})")
    return env


def merge_runtime_env(mine: Mapping[str, Any], project: Mapping[str, Any]) -> dict[str, Any]:
    """``mine`` (the user's runtime env) and ``project`` (``working_dir`` and ``env_vars``, from
    ``Job.runtime_env``) as one runtime env, by the rules of the module docstring; ``RuntimeEnvError``
    naming the key otherwise."""
    merged = dict(mine)
    if "working_dir" in merged and merged["working_dir"] != project.get("working_dir"):
        logger.warning(
            "runtime env working_dir %r replaced by the project's upload (add files with --include)",
            merged["working_dir"],
        )
        del merged["working_dir"]
    _check_py_modules(merged.get("py_modules"))
    for key, value in project.items():
        merged[key] = _merge_env_vars(merged.get(key) or {}, value) if key == "env_vars" else value
    _check_with_ray(merged)
    return merged


def _merge_env_vars(mine: Any, project: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(mine, dict):
        raise RuntimeEnvError(f"runtime env key 'env_vars': a mapping of names to strings (got {mine!r})")
    for name, value in project.items():
        if name in mine and mine[name] != value:
            raise RuntimeEnvError(
                f"runtime env key 'env_vars.{name}': mm-ray submit sets it to {value!r} "
                f"(yours: {mine[name]!r}); remove it from yours"
            )
    return {**mine, **project}


def _check_py_modules(modules: Any) -> None:
    for module in modules or ():
        if not (isinstance(module, str) and "://" in module):
            raise RuntimeEnvError(
                f"runtime env key 'py_modules': {module!r} is local, and would be uploaded whole around the "
                "upload allow-list; put the code in the project and add it with --include "
                "(the job's working directory is importable), or give a remote URI (s3://..., gs://...)"
            )


def _check_with_ray(env: Mapping[str, Any]) -> None:
    """Ray's own parsing of a runtime env (types of known keys, requirements files read), done here so a
    mistake fails before the upload; the client repeats it when it sends the job."""
    from ray.runtime_env import RuntimeEnv

    try:
        RuntimeEnv(**env)
    except (TypeError, ValueError) as err:
        raise RuntimeEnvError(f"runtime env: {err}") from None

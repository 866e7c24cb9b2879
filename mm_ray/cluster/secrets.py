"""Finding credentials in what a job would carry to the cluster, so that it is refused before it leaves.

    found = credentials_in_argv(["train", "data={storage_options: {secret_key: abc}}", "image.size=64"])
    found      # ["data.storage_options.secret_key (command line)"]
    found = credentials_in_file(Path("pipelines/s3.cfg").read_text(), "pipelines/s3.cfg")
    refusal(found)   # the message: which keys, where, and how a job gets credentials instead

A job's entrypoint is shown by ``ray job list``, the dashboard and every log of the cluster, and its working
directory is a zip anyone on the cluster can read: a secret key in either has left the machine in plain text.
So a job carries no credential at all: ``mm-ray submit`` refuses one, naming the key. The words and files are
read as the config loader reads them, not matched as text: every ``key=value`` word is parsed like an override
(a flow-style ``data={storage_options: {...}}``, a leading space), and every file that travels is parsed as
YAML whatever its name (``--config x.cfg``). Credentials are the ``data.storage_options`` keys that are not
settings (``mm_ray.config.load.PERSISTED_STORAGE_OPTIONS`` are: endpoint, region, scheme, ...), a
``track.mlflow`` URI with ``user:password@``, and a password in any URL of the command line. The cluster
supplies credentials itself: pyarrow's S3 filesystem falls back to the standard AWS chain on each node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from mm_ray.config.load import PERSISTED_STORAGE_OPTIONS, ConfigError, parse_override, set_dotted

HOW_JOBS_GET_CREDENTIALS = (
    "a job gets credentials from the cluster: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN in "
    "its nodes' environment (or a credentials file there), or an instance / pod role (IAM); MLflow's from "
    "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD there"
)
_URL_PASSWORD = re.compile(r"://[^/\s@:]*:[^/\s@]+@")


def credential_keys(raw: Any) -> list[str]:
    """The dotted keys of the credentials in ``raw`` (a config mapping, as a file or overrides give it)."""
    if not isinstance(raw, Mapping):
        return []
    found = []
    data = raw.get("data")
    options = data.get("storage_options") if isinstance(data, Mapping) else None
    if isinstance(options, Mapping):
        found += [f"data.storage_options.{k}" for k in options if k not in PERSISTED_STORAGE_OPTIONS]
    track = raw.get("track")
    mlflow = track.get("mlflow") if isinstance(track, Mapping) else None
    if isinstance(mlflow, str) and _URL_PASSWORD.search(mlflow):
        found.append("track.mlflow (user:password@)")
    return found


def credentials_in_argv(argv: Sequence[str]) -> list[str]:
    """The credentials in a command's words, each as ``"<key> (command line)"``."""
    found = []
    for word in argv:
        keys = []
        if "=" in word:
            try:
                key, value = parse_override(word.lstrip("-"))
                raw: dict[str, Any] = {}
                set_dotted(raw, key, value)
                keys = credential_keys(raw)
            except ConfigError:
                pass
        if not keys and _URL_PASSWORD.search(word):
            keys = ["a URL with user:password@"]
        found += [f"{k} (command line)" for k in keys]
    return found


def credentials_in_file(text: str, name: str) -> list[str]:
    """The credentials in a file's text read as a YAML config (any other text holds none), each as
    ``"<key> (<name>)"``."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return []  # not a config: the loader would refuse it too
    return [f"{k} ({name})" for k in credential_keys(raw)]


def refusal(found: Sequence[str]) -> str:
    """The message refusing a job that would carry the credentials ``found``."""
    return (
        f"a job never carries credentials, and this one would: {', '.join(found)} (its command line is shown "
        "by `ray job list` and its files are readable on the cluster); take them out: "
        + HOW_JOBS_GET_CREDENTIALS
    )

"""Keeping storage credentials out of what a job carries to the cluster.

    argv, withheld = scrub_overrides(["train", "data.storage_options.secret_key=abc", "image.size=64"])
    argv       # ["train", "image.size=64"]
    withheld   # ["data.storage_options.secret_key (command line)"]
    text, withheld = scrub_config_text(Path("pipelines/s3.yaml").read_text(), "pipelines/s3.yaml")

A job's entrypoint is shown by ``ray job list``, the dashboard and every log of the cluster, and its
working directory is a zip anyone on the cluster can read: a secret key in either has left the machine in
plain text. So only the ``data.storage_options`` keys that are settings, not credentials
(``mm_ray.config.load.PERSISTED_STORAGE_OPTIONS``: endpoint, region, scheme, ...) travel; access keys,
secret keys, session tokens and any unknown key are withheld, from ``key=value`` words and from the YAML
files that are uploaded alike. The cluster supplies credentials itself: pyarrow's S3 filesystem falls back
to the standard AWS chain on each node (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` in the nodes' environment, a credentials file there, or an instance / pod role).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from mm_ray.config.load import PERSISTED_STORAGE_OPTIONS

STORAGE_OPTIONS = "data.storage_options"


def scrub_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` without storage credentials in its ``key=value`` words, and the keys it withheld.

    ``data.storage_options.KEY=...`` with a credential ``KEY`` is dropped; ``data.storage_options={...}``
    keeps its setting keys (so it still replaces the config file's options, as it would locally).
    """
    out, withheld = [], []
    for word in argv:
        key, eq, value = word.partition("=")
        if eq and key.startswith(STORAGE_OPTIONS + "."):
            option = key.removeprefix(STORAGE_OPTIONS + ".")
            if option not in PERSISTED_STORAGE_OPTIONS:
                withheld.append(f"{key} (command line)")
                continue
        elif eq and key == STORAGE_OPTIONS:
            options = _parsed(value)
            if isinstance(options, dict):
                kept, dropped = _split(options)
                if dropped:
                    withheld += [f"{STORAGE_OPTIONS}.{k} (command line)" for k in dropped]
                    word = f"{STORAGE_OPTIONS}={json.dumps(kept)}"
        out.append(word)
    return out, withheld


def scrub_config_text(text: str, name: str) -> tuple[str | None, list[str]]:
    """A YAML config file's text without storage credentials (None when it holds none), and the keys withheld.

    The rewritten file is the same mapping dumped again (its comments are lost, its settings are not).
    """
    raw = _parsed(text)
    data = raw.get("data") if isinstance(raw, dict) else None
    options = data.get("storage_options") if isinstance(data, dict) else None
    if not isinstance(options, dict):
        return None, []
    kept, dropped = _split(options)
    if not dropped:
        return None, []
    data["storage_options"] = kept
    return yaml.safe_dump(raw, sort_keys=False), [f"{STORAGE_OPTIONS}.{k} ({name})" for k in dropped]


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    kept = {k: v for k, v in options.items() if k in PERSISTED_STORAGE_OPTIONS}
    return kept, sorted(str(k) for k in options if k not in PERSISTED_STORAGE_OPTIONS)


def _parsed(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None  # not ours to judge here: the config loader names the bad value

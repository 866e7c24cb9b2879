"""MLflow access: the optional import, ``track.mlflow`` as a tracking URI, metric and param names.

    uri = tracking_uri("runs/mlruns")         # "file:///abs/runs/mlruns" (a path resolves on the driver)
    mlflow = import_mlflow()                  # ConfigError naming the `[track]` extra when not installed
    tracked_metrics(epoch_metrics)            # the finite numbers worth a curve, under MLflow-safe names
    flat_params(persistable(as_dict(cfg)))    # {"train.lr": "0.001", "model.preset": "late_concat", ...}

MLflow is optional (``pip install 'mm-ray[track]'`` installs ``mlflow-skinny``: the client and the local
stores, no UI server). A local file store needs ``MLFLOW_ALLOW_FILE_STORE`` since MLflow 3 (it keeps the file
store in maintenance mode and steers users to a database); ``allow_file_store`` sets it for a URI the user
configured, unless they set it themselves.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mm_ray.config.load import ConfigError

EXTRA = "pip install 'mm-ray[track]'"
"""How to install the tracking dependencies."""

_NOT_IN_NAMES = re.compile(r"[^/\w.\- ]")
"""Characters MLflow rejects in metric and param names (the ``+`` of ``subset/image+audio/accuracy``);
tensorboardX rewrites the same ones to ``_`` in its tags."""


def import_mlflow() -> Any:
    """The ``mlflow`` module, or a ``ConfigError`` that names ``track.mlflow`` and the extra to install."""
    try:
        import mlflow
    except ImportError as err:
        raise ConfigError(
            f"track.mlflow is set but MLflow is not installed: {EXTRA} (or unset track.mlflow)"
        ) from err
    return mlflow


def tracking_uri(value: str) -> str:
    """``track.mlflow`` as a URI for MLflow: a plain path or a relative ``file:`` URI becomes an absolute
    ``file://`` URI (resolved where this runs: the driver); other URIs are kept. Raises ``ConfigError`` for a
    URI carrying ``user:password@`` (credentials go in ``MLFLOW_TRACKING_*`` environment variables)."""
    parts = urllib.parse.urlsplit(value)
    if "@" in parts.netloc:
        raise ConfigError(
            "track.mlflow: no credentials in the URI; set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD "
            "or MLFLOW_TRACKING_TOKEN in the environment instead"
        )
    if value.startswith("file:") and not value.startswith("file://"):
        return Path(value.removeprefix("file:")).expanduser().resolve().as_uri()
    # A one-letter scheme is a Windows drive ("C:\\runs"), not a URI.
    if len(parts.scheme) > 1:
        return value
    return Path(value).expanduser().resolve().as_uri()


def allow_file_store(uri: str) -> None:
    """Let MLflow 3 open the local file store ``uri`` was configured with (see the module docstring)."""
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def metric_name(key: str) -> str:
    """``key`` as MLflow accepts it: characters it rejects become ``_`` (``image+audio`` -> ``image_audio``), as in TensorBoard."""
    return _NOT_IN_NAMES.sub("_", key)


def tracked_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The values of one epoch's ``metrics`` worth a curve: finite numbers. Strings (``worker_nodes``),
    bools and wall-clock timestamps (``*_at``: seconds since 1970 plot as a flat line) are left out."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and not key.endswith("_at")
    }


def flat_params(raw: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config (``persistable(as_dict(cfg))``: secrets already out) as MLflow params: dotted keys,
    strings kept, other values as JSON (``0.001``, ``true``, ``null``, ``["image", "text"]``)."""
    out: dict[str, str] = {}
    for key, value in raw.items():
        name = metric_name(f"{prefix}{key}")
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, prefix=f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out

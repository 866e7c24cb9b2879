"""Lazy, offline imports of torchvision and HF ``transformers``: nothing imports them until an encoder of theirs is
configured, and nothing they do may reach a network.

    models = torchvision_models()          # torchvision.models
    transformers = transformers_module()   # with HF_HUB_OFFLINE=1 set first

Both live in the ``pretrained`` extra (``pip install 'mm-ray[pretrained]'``); a missing one is a ``ConfigError``
naming the setting that asked for it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import torch

from mm_ray.config.load import ConfigError

INSTALL_HINT = "install the pretrained extra: pip install 'mm-ray[pretrained]'"

# The ops whose fake (meta) kernels torchvision registers unconditionally at import (torchvision/_meta_registrations.py).
_SHIM_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_shim: torch.library.Library | None = None


def torchvision_models(key: str = "model.encoders.image.source") -> ModuleType:
    """``torchvision.models``, imported on first use; ``ConfigError`` naming ``key`` when torchvision is missing."""
    _importable_torchvision()
    try:
        import torchvision.models
    except ImportError as err:
        raise ConfigError(
            f"{key}=torchvision: torchvision is not installed ({err}); {INSTALL_HINT}"
        ) from None
    return torchvision.models


def transformers_module(key: str = "model.encoders") -> ModuleType:
    """``transformers``, imported offline: ``HF_HUB_OFFLINE=1`` is set before the import (a model directory is
    read from disk or not at all). ``ConfigError`` naming ``key`` when it is not installed."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # transformers imports torchvision when it is installed (for its image processors).
    _importable_torchvision()
    try:
        import transformers
    except ImportError as err:
        raise ConfigError(
            f"{key}=transformers: transformers is not installed ({err}); {INSTALL_HINT}"
        ) from None
    transformers.utils.logging.disable_progress_bar()  # a bar per weight load, in every Train worker
    return transformers


def _importable_torchvision() -> None:
    """Let torchvision's Python side import where its C++ ops cannot load.

    PyPI's Linux torchvision wheel is the CUDA build: its ``_C`` extension links ``libtorch_cuda``, so beside the
    CPU build of torch it does not load, and ``import torchvision`` then fails while registering fake kernels for
    ``torchvision::nms``/``qnms``, ops that only that extension defines. The classification models are plain
    PyTorch and need none of its ops; defining those two schemas (without kernels) lets the import finish. A
    detection op called then raises "no kernel", as it should. Where the extension loads (a matching build), or
    torchvision is already imported or absent, nothing is done.
    """
    global _shim
    if _shim is not None or "torchvision" in sys.modules:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = Path(next(iter(spec.submodule_search_locations)))
    candidates = [folder / f"_C{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    library = next((p for p in candidates if p.is_file()), None)
    if library is not None:
        try:
            torch.ops.load_library(str(library))
            return
        except (OSError, RuntimeError):
            pass
    _shim = torch.library.Library("torchvision", "DEF")  # kept alive: dropping it unregisters the schemas
    for schema in _SHIM_SCHEMAS:
        _shim.define(schema)

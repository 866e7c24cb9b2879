"""A run's configuration as a user gets it (``mm_ray.load_config``): read and type-checked by ``mm_ray.config``,
then every name in it checked against the run's modalities and the model zoo (``mm_ray.modalities.checked``),
so ``model.preset=gatd`` or ``data.modalities=[imgae]`` fails here, naming the key, before Ray starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mm_ray.config import load
from mm_ray.config.schema import Config
from mm_ray.modalities.registry import checked


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """``mm_ray.config.load.load_config(path, overrides)``, checked (plug-in modalities it names are imported)."""
    return checked(load.load_config(path, overrides))

"""Hand-made caches for tests: a manifest written by mm_ray's own writer, with the fields a test cares about.

    from cachekit import write_manifest

    write_manifest(tmp_path / "cache", samples_ok=1024, label_counts={"0": 512, "1": 512})

Everything else in the manifest is what ``cache_manifest`` writes for the default config (no rows are made:
write ``data/*.parquet`` yourself when the test reads them).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mm_ray.config.load import load_config
from mm_ray.data.cache import MANIFEST
from mm_ray.data.manifest import CacheManifest, cache_manifest

SUMMARY = {"samples_ok": 4, "samples_read": 4, "samples_quarantined": 0, "quarantine_reasons": {}}


def a_manifest(overrides: tuple[str, ...] = (), **fields: Any) -> CacheManifest:
    """The manifest of a cache of the default config (with ``overrides``), its ``fields`` replaced."""
    made = cache_manifest(
        load_config(None, list(overrides)), SUMMARY, ["a.tar"], '{"model": "stand-in"}', 1.0
    )
    return dataclasses.replace(made, **fields)


def write_manifest(cache_dir: Path, overrides: tuple[str, ...] = (), **fields: Any) -> CacheManifest:
    """``a_manifest(...)`` written as ``cache_dir``'s manifest (the directory is made)."""
    manifest = a_manifest(overrides, **fields)
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / MANIFEST).write_text(manifest.to_json())
    return manifest

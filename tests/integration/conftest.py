"""Integration fixtures: one local Ray per test module, the demo shards, and a pipeline runner.

Ray is started once per module (``num_cpus=2``: the plan must fit a 2-core laptop) and shut
down at the module's end. ``run_ingest(specs, *overrides)`` runs the real pipeline on a
config made of ``SMALL`` plus the overrides, trains the tokenizer on the shards' captions as
``mm-ray preprocess`` does, and returns every streamed column concatenated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from mm_ray.config.load import load_config
from mm_ray.config.schema import RayConfig
from mm_ray.data.captions import obtain_tokenizer
from mm_ray.data.pipeline import Ingest
from mm_ray.demo.dataset import make_shards
from mm_ray.runtime import init_ray

# Small outputs keep every run to seconds; the shapes differ from each other and from the
# defaults, so a test that checks a shape also checks that the config reached the stage.
SMALL = ("image.size=32", "audio.duration_s=0.5", "audio.n_mels=32", "text.max_length=40")
IMAGE_SIZE, N_MELS, MAX_LENGTH = 32, 32, 40
AUDIO_FRAMES = 1 + 8000 // 160  # 0.5 s at 16 kHz, hop 160, centred frames


@dataclasses.dataclass
class Run:
    """One finished stream: the ingest object (summary, finish, stats) and every output column."""

    ingest: Ingest
    columns: dict[str, np.ndarray]
    tokenizer_json: str

    @property
    def keys(self) -> list[str]:
        return [str(k) for k in self.columns.get("__key__", [])]

    def row(self, key: str) -> dict[str, Any]:
        i = self.keys.index(key)
        return {name: column[i] for name, column in self.columns.items()}


def run_pipeline(specs: list[str], *overrides: str) -> Run:
    """Build the pipeline for ``specs`` and stream it to the end (``finish`` is left to the test)."""
    cfg = load_config(None, [*SMALL, *overrides])
    tokenizer_json = obtain_tokenizer(cfg, specs)
    ingest = Ingest.from_config(cfg, specs, tokenizer_json)
    batches = list(ingest.dataset.iter_batches(batch_format="numpy"))
    columns = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]} if batches else {}
    return Run(ingest, columns, tokenizer_json)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """A local Ray for this module; ``init_ray`` later in the module (the CLI) reuses it."""
    init_ray(RayConfig(num_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def run_ingest(local_ray: None) -> Callable[..., Run]:
    return run_pipeline


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """48 demo samples in 12-sample shards (train and val), images 64-96 px; read-only for tests."""
    out = tmp_path_factory.mktemp("demo_shards")
    manifest = make_shards(out, num_samples=48, samples_per_shard=12, image_size=(64, 96), workers=1)
    return out, manifest

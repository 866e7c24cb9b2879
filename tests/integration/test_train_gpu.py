"""Ray Train on a GPU: NCCL DDP, bf16 autocast, and a checkpoint that loads on a CPU-only machine.

Marked ``gpu``: skipped where torch sees no CUDA device. The same code paths minus CUDA (the worker loop,
checkpoints, ``bf16`` ignored on CPU) run in tests/integration/test_train_ray.py and tests/unit/test_train_loop.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mm_ray.train.checkpoint import load_checkpoint
from mm_ray.train.ray_trainer import fit

from .test_train_ray import _config, caches  # noqa: F401  (the module-scoped cache fixture)

pytestmark = [pytest.mark.integration, pytest.mark.gpu]


def test_one_gpu_worker_trains_in_bf16_and_checkpoints_for_cpu(caches, tmp_path: Path) -> None:  # noqa: F811
    summary = fit(
        _config(
            caches,
            tmp_path,
            "train.epochs=2",
            "train.num_workers=1",
            "train.use_gpu=true",
            "train.bf16=true",
            "train.cpus_per_worker=1",
        )
    )
    assert summary.epochs_run == 2
    for epoch in summary.history:
        assert math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["val_loss"])
    # Saved from the GPU, loadable on CPU: every tensor is mapped to the requested device.
    state = load_checkpoint(summary.checkpoint, map_location="cpu")
    assert all(t.device.type == "cpu" for t in state["model"].values())

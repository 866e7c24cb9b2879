"""Large-run options on GPUs (``gpu``-marked: skipped where torch sees no CUDA device): fp16 with a loss scaler on
a Ray Train GPU worker, and FSDP over NCCL on two GPUs (skipped with fewer). Their CPU counterparts (bf16 on CPU,
FSDP over gloo) run in tests/unit/test_precision.py, tests/unit/test_distributed_equalities.py and
tests/integration/test_large_runs.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mm_ray.train.checkpoint import load_checkpoint
from mm_ray.train.ray_trainer import fit

from .test_train_ray import _config, caches  # noqa: F401  (the module-scoped cache fixture)

pytestmark = [pytest.mark.integration, pytest.mark.gpu]


def test_an_fp16_gpu_worker_trains_with_a_loss_scaler(caches, tmp_path: Path) -> None:  # noqa: F811
    run = fit(
        _config(
            caches, tmp_path, "train.epochs=2", "train.num_workers=1", "train.use_gpu=true",
            "train.precision=fp16", "train.cpus_per_worker=1",
        )
    )  # fmt: skip
    assert all(math.isfinite(m["train_loss"]) and math.isfinite(m["val_loss"]) for m in run.history)
    state = load_checkpoint(run.checkpoint, map_location="cpu")
    assert (
        state["scaler"] and state["scaler"]["scale"] > 0
    )  # the GradScaler's state travels with the checkpoint


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP over NCCL needs two GPUs (one rank per GPU)")
def test_fsdp_over_nccl_shards_the_model_across_two_gpus(caches, tmp_path: Path) -> None:  # noqa: F811
    run = fit(
        _config(
            caches, tmp_path, "train.epochs=1", "train.num_workers=2", "train.use_gpu=true",
            "train.strategy=fsdp", "train.precision=bf16", "train.cpus_per_worker=1",
        )
    )  # fmt: skip
    assert 0.45 < run.metrics["train_params_local_fraction"] < 0.55
    assert math.isfinite(run.metrics["val_loss"])
    assert all(
        t.device.type == "cpu" for t in load_checkpoint(run.checkpoint, map_location="cpu")["model"].values()
    )

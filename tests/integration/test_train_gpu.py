"""Ray Train on a GPU: NCCL DDP, bf16 autocast, and a checkpoint that loads on a CPU-only machine.

Marked ``gpu``: skipped where torch sees no CUDA device. The same code paths minus CUDA (the worker loop,
checkpoints, ``bf16`` ignored on CPU) run in tests/integration/test_train_ray.py and tests/unit/test_train_loop.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mm_ray.config.load import load_config
from mm_ray.train.checkpoint import load_checkpoint
from mm_ray.train.ray_trainer import fit

from .test_train_ray import CACHE, TINY_MODEL, _config, caches  # noqa: F401  (the module-scoped cache fixture)

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


def test_the_image_pool_on_the_gpu_is_a_pool_of_its_own(demo_shards) -> None:
    """pools.image.num_gpus: the image stage runs in GPU actors while text and audio share one CPU pool."""
    from mm_ray.data.captions import obtain_tokenizer
    from mm_ray.data.pipeline import Ingest

    shards, manifest = demo_shards
    specs = [str(shards / name) for name in manifest["shards"]["train"]]
    cfg = load_config(None, [*CACHE, "pools.image.num_gpus=0.5"])
    stream = Ingest.from_config(cfg, specs, obtain_tokenizer(cfg, specs))
    assert stream.plan.groups == {"fused": ("text", "audio"), "image": ("image",)}
    assert stream.plan.pools["image"].num_gpus == 0.5
    rows = sum(len(b["label"]) for b in stream.dataset.iter_batches(batch_format="numpy"))
    assert rows == stream.finish()["samples_ok"] > 0


def test_streaming_from_shards_trains_on_the_gpu(demo_shards, tmp_path: Path) -> None:
    """No cache: the ingest pools feed one NCCL worker on the GPU."""
    shards, manifest = demo_shards
    train = [str(shards / name) for name in manifest["shards"]["train"]]
    val = [str(shards / name) for name in manifest["shards"]["val"]]
    cfg = load_config(
        None,
        [
            *CACHE,
            *TINY_MODEL,
            "model.num_classes=4",
            f"data.shards={json.dumps(train)}",
            f"data.val_shards={json.dumps(val)}",
            f"train.storage_path={tmp_path}",
            f"output_dir={tmp_path}",
            "train.epochs=2",
            "train.num_workers=1",
            "train.use_gpu=true",
            "train.cpus_per_worker=1",
        ],
    )
    result = fit(cfg)
    assert result.source == "shards" and result.epochs_run == 2
    assert all(math.isfinite(epoch["train_loss"]) for epoch in result.history)

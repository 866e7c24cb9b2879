"""``train.precision``: bf16 autocast on CPU really computes in bfloat16 and trains; fp16 is refused off CUDA and
trains with a loss scaler on a GPU (``gpu``-marked, skipped without CUDA); the legacy ``train.bf16`` flag means
bf16 on GPU workers only."""

from __future__ import annotations

import pytest
import torch

from mm_ray.config.load import ConfigError, load_config
from mm_ray.train.autocast import autocast_dtype, grad_scaler, scoring_dtype
from mm_ray.train.loop import train_epoch
from mm_ray.train.ray_trainer import check_large_run_options
from tests.tiny_fusion import batches, rows, tiny_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _linear_output_dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    dtypes: set[torch.dtype] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    return dtypes


def test_the_precision_names_resolve_per_device():
    assert autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert autocast_dtype("fp32", "cpu", legacy_bf16=True) is None  # train.bf16: GPU workers only
    assert autocast_dtype("fp32", "cuda", legacy_bf16=True) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        autocast_dtype("fp16", "cpu")
    assert scoring_dtype("fp16", "cpu") is None  # a GPU run's checkpoint scores in float32 on a CPU
    assert grad_scaler("bf16", "cpu") is None


def test_fp16_without_gpu_workers_fails_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.precision"):
        check_large_run_options(load_config(None, ["train.precision=fp16"]))


def test_bf16_on_cpu_computes_in_bfloat16_and_trains():
    torch.manual_seed(0)
    model = tiny_model()
    dtypes = _linear_output_dtypes(model)
    data = batches(rows(64, seed=1), 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = train_epoch(model, data, optimizer, device="cpu", autocast_dtype=autocast_dtype("bf16", "cpu"))
    for _ in range(6):
        last = train_epoch(model, data, optimizer, device="cpu", autocast_dtype=torch.bfloat16)
    assert torch.bfloat16 in dtypes  # the option did something: the layers ran in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights and optimizer stay fp32
    assert last["loss"] < first["loss"]


@pytest.mark.gpu
@needs_cuda
def test_fp16_trains_on_cuda_with_a_loss_scaler():
    torch.manual_seed(0)
    model = tiny_model().cuda()
    dtypes = _linear_output_dtypes(model)
    data = batches(rows(64, seed=1), 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = grad_scaler("fp16", "cuda")
    start = scaler.get_scale()
    first = train_epoch(model, data, optimizer, device="cuda", autocast_dtype=torch.float16, scaler=scaler)
    for _ in range(6):
        last = train_epoch(model, data, optimizer, device="cuda", autocast_dtype=torch.float16, scaler=scaler)
    assert torch.float16 in dtypes
    assert scaler.get_scale() != start or scaler._growth_tracker > 0  # the scaler was stepped
    assert last["loss"] < first["loss"]

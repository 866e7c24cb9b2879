"""``train.compile``: ``parallelize`` hands back a model that torch.compile traces (seen from inside the model's
forward, through ``torch.compiler.is_compiling``), which trains like the eager one, and whose checkpoint holds
the plain state dict (no ``_orig_mod.`` prefix). The "eager" backend traces without generating code, so this
takes seconds; the inductor backend that runs take a minute here to compile (``mm-ray bench train --modes
eager,compiled`` times it)."""

from __future__ import annotations

import torch

from mm_ray.train.loop import train_epoch
from mm_ray.train.parallel import full_states, parallelize
from mm_ray.train.wrapping import unwrap
from tests.tiny_fusion import batches, rows, tiny_model


def _train(compile: bool) -> tuple[torch.nn.Module, torch.nn.Module, list[bool]]:
    model = tiny_model()
    traced: list[bool] = []
    model.register_forward_pre_hook(lambda *_: traced.append(torch.compiler.is_compiling()))
    wrapped = parallelize(
        model, strategy="ddp", compile=compile, world_size=1, place=lambda m, _ddp: m, compile_backend="eager"
    )
    optimizer = torch.optim.AdamW(wrapped.parameters(), lr=3e-3)
    train_epoch(wrapped, batches(rows(64, seed=2), 16), optimizer, device="cpu")
    return model, wrapped, traced


def test_compile_traces_the_model_and_trains_like_eager():
    eager, _, eager_traced = _train(compile=False)
    compiled, wrapped, traced = _train(compile=True)
    assert any(traced) and not any(eager_traced)  # the option reached torch.compile
    assert unwrap(wrapped) is compiled
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        assert (a - b).abs().max().item() < 2e-4  # AdamW: see test_grad_accum.py
    assert set(full_states(wrapped)["model"]) == set(compiled.state_dict())  # no _orig_mod. prefix

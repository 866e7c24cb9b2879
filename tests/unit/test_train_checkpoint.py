"""Checkpoint save/load: the model, optimizer and scheduler come back exactly, DDP prefixes never leak."""

from __future__ import annotations

import pytest
import torch

from mm_ray.models import build_model, param_groups
from mm_ray.train.checkpoint import STATE_FILE, load_checkpoint, restore_into, save_checkpoint
from mm_ray.train.schedule import warmup_cosine

SHAPES = {"num_classes": 3, "image_size": 16, "vocab_size": 50, "n_mels": 8, "max_text_len": 8}


def _model(seed: int) -> torch.nn.Module:
    return build_model(
        "late_concat", modalities=("image", "audio"), width=8, depth=1, fusion_dim=8, seed=seed, **SHAPES
    )


def _trained(seed: int = 0, steps: int = 3):
    model = _model(seed)
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-2, lr_by_modality={"audio": 1e-3}))
    scheduler = warmup_cosine(optimizer, warmup_steps=2, total_steps=10)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = {
            "image": torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8, generator=gen),
            "audio": torch.randn(4, 8, 12, generator=gen),
        }
        loss = torch.nn.functional.cross_entropy(model(batch), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def test_round_trip_restores_model_optimizer_scheduler_and_epoch(tmp_path):
    model, optimizer, scheduler = _trained()
    save_checkpoint(
        tmp_path / "ckpt",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        epoch=4,
        config={"lr": 1e-2, "preset": "late_concat"},
        metrics={"train_loss": 0.5},
    )

    fresh = _model(seed=1)  # different initial weights, so equality below proves the load
    fresh_opt = torch.optim.AdamW(param_groups(fresh, lr=1e-2, lr_by_modality={"audio": 1e-3}))
    fresh_sched = warmup_cosine(fresh_opt, warmup_steps=2, total_steps=10)
    state = load_checkpoint(tmp_path / "ckpt")
    assert restore_into(state, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched) == 4

    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    saved, loaded = optimizer.state_dict(), fresh_opt.state_dict()
    assert [g["lr"] for g in loaded["param_groups"]] == [g["lr"] for g in saved["param_groups"]]
    for pid, moments in saved["state"].items():
        assert torch.equal(loaded["state"][pid]["step"], moments["step"])
        assert torch.equal(loaded["state"][pid]["exp_avg"], moments["exp_avg"])
        assert torch.equal(loaded["state"][pid]["exp_avg_sq"], moments["exp_avg_sq"])
    assert fresh_sched.last_epoch == scheduler.last_epoch == 3
    assert state["config"]["preset"] == "late_concat" and state["metrics"] == {"train_loss": 0.5}


def test_wrapped_model_saves_unprefixed_keys(tmp_path):
    model, optimizer, _ = _trained(steps=1)

    class Wrapper(torch.nn.Module):  # stands in for DDP's `.module` attribute layout
        def __init__(self, module):
            super().__init__()
            self.module = module

    save_checkpoint(tmp_path, model=Wrapper(model), optimizer=optimizer, scheduler=None, epoch=1)
    state = load_checkpoint(tmp_path)
    assert set(state["model"]) == set(model.state_dict())
    assert state["scheduler"] is None


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=STATE_FILE):
        load_checkpoint(tmp_path)

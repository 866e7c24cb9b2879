"""The training epoch: learning a toy problem, gradient clipping, batch conversion, determinism, bf16."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mm_ray.train.loop import seed_everything, to_device, train_epoch
from mm_ray.train.schedule import warmup_cosine

N_MELS, FRAMES, CLASSES = 4, 6, 3


class TinyAudioModel(torch.nn.Module):
    """A linear classifier on the ``audio`` column, with a learned embedding used where audio is missing."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(N_MELS * FRAMES, CLASSES)
        self.missing = torch.nn.Parameter(torch.zeros(CLASSES))

    def forward(self, batch):
        logits = self.linear(batch["audio"].flatten(1))
        return torch.where(batch["has_audio"][:, None], logits, self.missing)


def _toy_batches(n: int = 384, batch_size: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Linearly separable: the label is the argmax of the mean of three fixed slices of the spectrogram."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((n, N_MELS, FRAMES)).astype(np.float32)
    labels = audio.reshape(n, CLASSES, -1).mean(axis=2).argmax(axis=1).astype(np.int64)
    batches = []
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        size = len(labels[part])
        batches.append(
            {
                "__key__": np.array([f"s{i:05d}" for i in range(start, start + size)], dtype=object),
                "__shard__": np.array(["shard-000.tar"] * size),  # numpy unicode, not object
                "audio": audio[part],
                "label": labels[part],
                "has_audio": np.ones(size, dtype=bool),
            }
        )
    return batches


def test_learns_a_separable_problem():
    seed_everything(0)
    model = TinyAudioModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    batches = _toy_batches()
    history = [train_epoch(model, batches, optimizer, device="cpu") for _ in range(6)]
    assert history[-1]["loss"] < history[0]["loss"] / 2
    assert history[-1]["accuracy"] > 0.95
    assert history[-1]["samples"] == 384 and history[-1]["steps"] == 12


def test_grad_clip_bounds_the_gradient_and_the_update():
    def one_step(grad_clip):
        seed_everything(0)
        model = TinyAudioModel()
        batches = _toy_batches(n=32)
        for batch in batches:
            batch["audio"] = batch["audio"] * 50.0  # large inputs -> large gradients
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        train_epoch(model, batches, optimizer, device="cpu", grad_clip=grad_clip)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        step = [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]
        update_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in step]))
        return float(grad_norm), float(update_norm)

    unclipped_grad, _ = one_step(grad_clip=None)
    clipped_grad, clipped_update = one_step(grad_clip=0.5)
    assert unclipped_grad > 5.0  # the test only means something if clipping had work to do
    assert clipped_grad == pytest.approx(0.5, rel=1e-4)
    assert clipped_update == pytest.approx(0.5, rel=1e-4)  # SGD lr=1: the update is the clipped gradient


def test_to_device_converts_numpy_and_drops_non_numeric_columns():
    batch = _toy_batches(n=8)[0]
    batch["ids"] = torch.arange(8, dtype=torch.int32)
    batch["note"] = "not a column"
    readonly = batch["audio"].copy()
    readonly.flags.writeable = False  # Ray Data hands out read-only arrays
    batch["audio"] = readonly
    out = to_device(batch, "cpu")
    assert set(out) == {"audio", "label", "has_audio", "ids"}
    assert out["audio"].dtype == torch.float32 and out["has_audio"].dtype == torch.bool
    assert out["label"].dtype == torch.int64
    assert np.array_equal(out["audio"].numpy(), readonly)
    out["audio"].zero_()  # must not write through to the read-only array
    assert readonly.any()


def test_same_seed_same_run():
    def run(seed):
        seed_everything(seed)
        model = TinyAudioModel()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        batches = _toy_batches()
        torch.nn.init.normal_(model.missing)  # draws from the seeded global generator too
        return [train_epoch(model, batches, optimizer, device="cpu")["loss"] for _ in range(2)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_scheduler_is_stepped_per_step_and_logs(caplog):
    model = TinyAudioModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = warmup_cosine(optimizer, warmup_steps=2, total_steps=12)
    with caplog.at_level(logging.INFO, logger="mm_ray.train.loop"):
        stats = train_epoch(model, _toy_batches(), optimizer, scheduler, device="cpu", log_every=4)
    assert stats["steps"] == 12 and scheduler.last_epoch == 12
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert [r.getMessage().split()[1] for r in caplog.records] == ["4", "8", "12"]


def test_bf16_autocast_on_cpu_trains():
    seed_everything(0)
    model = TinyAudioModel()
    dtypes = set()
    model.linear.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    batches = _toy_batches()
    first = train_epoch(model, batches, optimizer, device="cpu", autocast_dtype=torch.bfloat16)
    assert dtypes == {torch.bfloat16}  # the forward really ran under autocast
    for _ in range(3):
        last = train_epoch(model, batches, optimizer, device="cpu", autocast_dtype=torch.bfloat16)
    assert np.isfinite(last["loss"]) and last["loss"] < first["loss"]
    assert last["accuracy"] > 0.85
    assert model.linear.weight.dtype == torch.float32  # autocast keeps the master weights in fp32


def test_empty_epoch():
    model = TinyAudioModel()
    stats = train_epoch(model, [], torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")
    assert stats["samples"] == 0 and stats["steps"] == 0 and np.isnan(stats["loss"])

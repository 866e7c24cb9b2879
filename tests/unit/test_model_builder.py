"""``model.builder``: your own model from ``package.module:function`` (here ``tests/builders.py``), trained by the
Ray-free loop with the run's settings, saved and restored; Tune can search its kwargs; and a builder named only
inside a checkpoint is never imported (a checkpoint is data, not code to run)."""

from __future__ import annotations

import sys
from pathlib import Path

import builders
import numpy as np
import pytest
import torch

from mm_ray.config.load import ConfigError, as_dict, config_from_dict, load_config
from mm_ray.models import ModelSpec, param_groups
from mm_ray.models.builder import BuilderError
from mm_ray.train.checkpoint import (
    TOKENIZER_FILE,
    CheckpointError,
    LoadedCheckpoint,
    open_checkpoint,
    open_for_shards,
    save_checkpoint,
)
from mm_ray.train.loop import loop_epoch, seed_everything
from mm_ray.train.schedule import optimizer_and_schedule
from mm_ray.train.spec import LoopConfig, read_loop_config
from mm_ray.tune.space import parse_space

BUILDER = "builders:bag_of_features"
SHAPES = {"image": [3, 8, 8], "input_ids": [6], "audio": [5, 7]}
CLASSES, VOCAB = 3, 40


def _loop(*overrides: str) -> LoopConfig:
    cfg = load_config(
        None,
        [
            f"model.builder={BUILDER}",
            "model.builder_kwargs={hidden: 12}",
            "train.epochs=3",
            "train.lr=0.05",
            "train.warmup_steps=0",
            "train.batch_size=32",
            "image.size=8",
            "text.max_length=6",
            "audio.n_mels=5",
            *overrides,
        ],
    )
    return LoopConfig.for_run(
        cfg, shapes=SHAPES, vocab_size=VOCAB, num_classes=CLASSES, rows=192, has_val=False
    )


def _batches(n: int = 192, batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """The label is the brightest colour channel of the image; text and audio are noise."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (n, 3, 8, 8)).astype(np.uint8)
    labels = rng.integers(0, CLASSES, n)
    image[np.arange(n), labels] += 120
    batches = []
    for s in range(0, n, batch_size):
        part = slice(s, s + batch_size)
        size = len(labels[part])
        batches.append(
            {
                "image": image[part],
                "input_ids": rng.integers(1, VOCAB, (size, 6)).astype(np.int32),
                "attention_mask": np.ones((size, 6), dtype=np.int8),
                "audio": rng.standard_normal((size, 5, 7)).astype(np.float32),
                "label": labels[part].astype(np.int64),
                **{f"has_{m}": np.ones(size, dtype=bool) for m in ("image", "text", "audio")},
            }
        )
    return batches


def test_the_builder_gets_the_input_sizes_and_its_kwargs() -> None:
    loop = _loop()
    assert loop.model.builder == BUILDER and loop.model.builder_kwargs == {"hidden": 12}
    model = loop.model.build()
    assert isinstance(model, builders.BagOfFeatures)
    assert builders.CALLS[-1] == {
        "modalities": ["image", "text", "audio"],
        "num_classes": CLASSES,
        "image_size": 8,
        "vocab_size": VOCAB,
        "n_mels": 5,
        "max_text_len": 6,
        "hidden": 12,
    }
    # The spec's seed fixes the initial weights, whatever the global RNG.
    torch.manual_seed(123)
    again = loop.model.build()
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )
    # Its encoders ModuleDict gets per-modality learning rates.
    groups = param_groups(model, lr=1e-3, lr_by_modality={"text": 1e-4})
    assert {g["name"]: g["lr"] for g in groups} == {
        "image": 1e-3,
        "text": 1e-4,
        "audio": 1e-3,
        "fusion": 1e-3,
    }


def test_a_builder_model_trains_saves_and_restores_only_when_named(tmp_path: Path) -> None:
    loop = _loop()
    seed_everything(0)
    model = loop.model.build()
    optimizer, scheduler = optimizer_and_schedule(model, loop)
    history = [
        loop_epoch(model, _batches(), optimizer, scheduler, loop, device="cpu") for _ in range(loop.epochs)
    ]
    assert history[-1]["loss"] < history[0]["loss"] * 0.7
    assert history[-1]["accuracy"] > 0.8
    save_checkpoint(
        tmp_path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=3, config=loop.to_state()
    )
    (tmp_path / TOKENIZER_FILE).write_text("{}")
    assert read_loop_config(loop.to_state()) == loop
    # Opened without naming the builder, or naming another: refused...
    with pytest.raises(CheckpointError, match=r"pass model\.builder=builders:bag_of_features"):
        open_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="builders:other given"):
        open_checkpoint(tmp_path, builder="builders:other")
    # ...until the caller names the same one; the saved config does not carry it into the caller's settings.
    ckpt = open_checkpoint(tmp_path, builder=BUILDER)
    assert ckpt.config().model.builder is None
    restored = ckpt.restore_model()
    batch = {k: torch.from_numpy(v) for k, v in _batches()[0].items()}
    model.eval()
    with torch.no_grad():
        assert torch.allclose(restored(batch), model(batch))


def test_a_builder_named_only_in_a_checkpoint_is_never_imported(tmp_path: Path, monkeypatch) -> None:
    # A module that leaves a mark when imported: what a hostile checkpoint would name.
    marker = tmp_path / "imported"
    (tmp_path / "planted_builder.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from builders import bag_of_features as make\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loop = _loop("model.builder=planted_builder:make")
    model = builders.bag_of_features(
        **{k: v for k, v in builders.CALLS[-1].items()}
    )  # any weights of that shape
    state = loop.to_state()
    ckpt_dir = tmp_path / "ckpt"
    save_checkpoint(
        ckpt_dir,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        scheduler=None,
        epoch=1,
        config=state,
    )
    (ckpt_dir / TOKENIZER_FILE).write_text("{}")
    with pytest.raises(CheckpointError, match="planted_builder:make"):
        open_checkpoint(ckpt_dir)
    with pytest.raises(CheckpointError, match="planted_builder:make"):
        open_for_shards(ckpt_dir, ["shards"], purpose="evaluate on")  # the saved config names no builder
    # Held without the open's check (a LoadedCheckpoint made by hand): restoring checks again.
    bare = LoadedCheckpoint(ckpt_dir, {"config": state, "model": model.state_dict(), "epoch": 1}, "{}")
    with pytest.raises(CheckpointError, match="planted_builder:make"):
        bare.restore_model()
    assert not marker.exists() and "planted_builder" not in sys.modules
    open_checkpoint(ckpt_dir, builder="planted_builder:make").restore_model()  # named by the caller: imported
    assert marker.read_text() == "ran"
    sys.modules.pop("planted_builder", None)


def test_builder_errors_name_the_key() -> None:
    spec = dict(
        preset="late_concat", modalities=("image",), num_classes=2, image_size=8, vocab_size=10, n_mels=4
    )
    with pytest.raises(
        BuilderError, match=r"model.builder=no_such_module_xyz:f: cannot import 'no_such_module_xyz'"
    ):
        ModelSpec.from_dict({**spec, "builder": "no_such_module_xyz:f"}).build()
    with pytest.raises(BuilderError, match=r"not a torch\.nn\.Module"):
        ModelSpec.from_dict({**spec, "builder": "builders:not_a_module"}).build()
    with pytest.raises(BuilderError, match=r"expected 'package\.module:function'"):
        ModelSpec.from_dict({**spec, "builder": "builders.bag_of_features"}).build()
    with pytest.raises(BuilderError, match="no function 'missing'"):
        ModelSpec.from_dict({**spec, "builder": "builders:missing"}).build()
    with pytest.raises(ConfigError, match="auxiliary and alignment losses"):
        _loop("train.aux_loss_weight=0.3")


def test_tune_can_search_builder_kwargs() -> None:
    space = parse_space(
        {"model.builder_kwargs.hidden": {"choice": [8, 16]}, "train.lr": {"loguniform": [1e-4, 1e-2]}}
    )
    base = load_config(None, [f"model.builder={BUILDER}", "model.builder_kwargs={hidden: 12, extra: 1}"])
    # A trial lays its sampled keys over the base config as dotted overrides.
    trial = config_from_dict(as_dict(base), ["model.builder_kwargs.hidden=16"])
    assert space.keys == ["model.builder_kwargs.hidden", "train.lr"]
    assert trial.model.builder_kwargs == {"hidden": 16, "extra": 1}

"""Opening checkpoints for ``mm-ray evaluate`` (no Ray): a run directory yields the checkpoint with the most
finished epochs, the saved config comes back with overrides but refuses input sizes the model was not trained
on, and the restored model is the trained one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mm_ray.config.load import ConfigError, as_dict, load_config
from mm_ray.data.sources import ShardSpecError
from mm_ray.models import build_model
from mm_ray.train.checkpoint import TOKENIZER_FILE, save_checkpoint
from mm_ray.train.evaluate import (
    CheckpointError,
    checkpoint_config,
    evaluate_checkpoint,
    open_checkpoint,
    restore_model,
)

PREPROCESS = ("image.size=16", "text.max_length=8", "audio.n_mels=8")
MODEL_KWARGS = {
    "modalities": ["image", "text", "audio"],
    "num_classes": 3,
    "image_size": 16,
    "vocab_size": 30,
    "n_mels": 8,
    "max_text_len": 8,
    "width": 8,
    "depth": 1,
    "fusion_dim": 8,
}


def _write(directory: Path, *, epoch: int, seed: int = 0, tokenizer: bool = True) -> torch.nn.Module:
    """A checkpoint as the Ray Train adapter writes it: state.pt with the loop config, tokenizer beside it."""
    model = build_model("late_concat", **MODEL_KWARGS, seed=seed)
    loop = {
        "preset": "late_concat",
        "model_kwargs": {**MODEL_KWARGS, "seed": seed},
        "batch_size": 4,
        "resolved": as_dict(load_config(None, PREPROCESS)),
    }
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(directory, model=model, optimizer=optimizer, scheduler=None, epoch=epoch, config=loop)
    if tokenizer:
        (directory / TOKENIZER_FILE).write_text('{"model": "stand-in"}')
    return model


def test_a_checkpoint_directory_is_used_as_given(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt", epoch=3)
    ckpt = open_checkpoint(tmp_path / "ckpt")
    assert ckpt.directory == tmp_path / "ckpt" and ckpt.picked_from is None
    assert ckpt.state["epoch"] == 3 and ckpt.tokenizer_json == '{"model": "stand-in"}'
    assert "optimizer" not in ckpt.state  # not needed to evaluate; dropped to save memory


def test_a_run_directory_yields_its_checkpoint_with_the_most_epochs(tmp_path: Path) -> None:
    # Names sort in another order than the epochs: the epoch inside state.pt decides, not the name.
    _write(tmp_path / "checkpoint_2025-01-01_10-00-00", epoch=2)
    _write(tmp_path / "checkpoint_2025-01-01_09-00-00", epoch=4)
    _write(tmp_path / "checkpoint_2025-01-01_11-00-00", epoch=1)
    (tmp_path / "checkpoint_2025-01-01_12-00-00").mkdir()  # unfinished: no state.pt, ignored
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.directory == tmp_path / "checkpoint_2025-01-01_09-00-00"
    assert ckpt.picked_from == tmp_path and ckpt.state["epoch"] == 4


def test_equal_epochs_pick_the_later_name(tmp_path: Path) -> None:
    _write(tmp_path / "checkpoint_2025-01-02", epoch=2)
    _write(tmp_path / "checkpoint_2025-01-01", epoch=2)
    assert open_checkpoint(tmp_path).directory.name == "checkpoint_2025-01-02"


def test_paths_that_are_not_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=rf"{tmp_path}.* not an mm_ray checkpoint"):
        open_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="missing"):
        open_checkpoint(tmp_path / "missing")
    _write(tmp_path / "no_tok", epoch=1, tokenizer=False)
    with pytest.raises(CheckpointError, match=rf"no_tok: no {TOKENIZER_FILE}"):
        open_checkpoint(tmp_path / "no_tok")
    damaged = tmp_path / "damaged"
    _write(damaged, epoch=1)
    with open(damaged / "state.pt", "r+b") as f:
        f.truncate(os.path.getsize(damaged / "state.pt") // 2)
    with pytest.raises(CheckpointError, match="damaged: cannot read the checkpoint"):
        open_checkpoint(damaged)


def test_config_comes_back_with_overrides_and_guards_input_sizes(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt", epoch=1)
    state = open_checkpoint(tmp_path / "ckpt").state
    cfg = checkpoint_config(state, ["pools.image.num_cpus=0.2"])
    assert (cfg.image.size, cfg.text.max_length, cfg.audio.n_mels) == (16, 8, 8)
    assert cfg.pools.image.num_cpus == 0.2
    with pytest.raises(ConfigError, match=r"image\.size: 32, .* size 16; pass image\.size=16"):
        checkpoint_config(state, ["image.size=32"])
    with pytest.raises(ConfigError, match=r"audio\.n_mels"):
        checkpoint_config(state, ["audio.n_mels=64"])
    # MFCC features are 3 x n_mfcc rows with deltas: a log-mel model of 8 mel bands does not take 24 rows.
    with pytest.raises(ConfigError, match=r"audio\.features/n_mfcc/deltas: 24 audio feature rows, .* size 8"):
        checkpoint_config(state, ["audio.features=mfcc", "audio.n_mfcc=8"])
    assert checkpoint_config(state, ["audio.features=mfcc", "audio.n_mfcc=8", "audio.deltas=false"])


def test_restored_model_is_the_trained_one_in_eval_mode(tmp_path: Path) -> None:
    trained = _write(tmp_path / "ckpt", epoch=1, seed=7)
    # The saved model_kwargs say seed=7 too, so compare against a model built with another seed.
    state = open_checkpoint(tmp_path / "ckpt").state
    state["config"]["model_kwargs"]["seed"] = 0
    model = restore_model(state)
    assert not model.training
    for (name, a), (_, b) in zip(trained.state_dict().items(), model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    fresh = build_model("late_concat", **MODEL_KWARGS, seed=0)  # what the weights would be without the load
    assert any(
        not torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_no_shards_and_no_val_shards_fail_before_ray_starts(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt", epoch=1)
    with pytest.raises(ShardSpecError, match="no shards to evaluate on"):
        evaluate_checkpoint(tmp_path / "ckpt", [])

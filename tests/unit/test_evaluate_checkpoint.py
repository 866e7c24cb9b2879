"""Opening checkpoints for ``mm-ray evaluate`` (no Ray): a run directory yields the checkpoint with the most
finished epochs, the saved config comes back with overrides but refuses input sizes the model was not trained
on, the restored model is the trained one, and a checkpoint of the first format still loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tiny_fusion import KWARGS as MODEL_KWARGS

from mm_ray.config.load import ConfigError, load_config
from mm_ray.data.sources import ShardSpecError
from mm_ray.models import ModelSpec, build_model
from mm_ray.train.checkpoint import (
    FORMAT,
    TOKENIZER_FILE,
    CheckpointError,
    load_checkpoint,
    open_checkpoint,
    save_checkpoint,
)
from mm_ray.train.evaluate import evaluate
from mm_ray.train.spec import LoopConfig

FIXTURE = Path(__file__).parents[1] / "fixtures" / "checkpoint_format1"

PREPROCESS = ("image.size=16", "text.max_length=8", "audio.n_mels=8")


def _write(directory: Path, *, epoch: int, seed: int = 0, tokenizer: bool = True) -> torch.nn.Module:
    """A checkpoint as the Ray Train adapter writes it: state.pt with the loop config, tokenizer beside it."""
    model = build_model("late_concat", **MODEL_KWARGS, seed=seed)
    spec = ModelSpec.from_dict({"preset": "late_concat", **MODEL_KWARGS, "seed": seed})
    loop = LoopConfig(model=spec, resolved=load_config(None, PREPROCESS), batch_size=4)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(
        directory, model=model, optimizer=optimizer, scheduler=None, epoch=epoch, config=loop.to_state()
    )
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
    ckpt = open_checkpoint(tmp_path / "ckpt")
    cfg = ckpt.config(["pools.image.num_cpus=0.2"])
    assert (cfg.image.size, cfg.text.max_length, cfg.audio.n_mels) == (16, 8, 8)
    assert cfg.pools.image.num_cpus == 0.2
    with pytest.raises(
        ConfigError,
        match=r"image\.size: 32 make image \[3, 32, 32\], .* trained on \[3, 16, 16\]; pass image\.size=16",
    ):
        ckpt.config(["image.size=32"])
    with pytest.raises(ConfigError, match=r"audio\.n_mels"):
        ckpt.config(["audio.n_mels=64"])
    # MFCC features are 3 x n_mfcc rows with deltas: a log-mel model of 8 mel bands does not take 24 rows.
    with pytest.raises(
        ConfigError,
        match=r"audio\.features: 'mfcc', audio\.n_mfcc: 8 make audio \[24, \d+\].* pass audio\.features=log_mel audio\.n_mfcc=20",
    ):
        ckpt.config(["audio.features=mfcc", "audio.n_mfcc=8"])
    assert ckpt.config(["audio.features=mfcc", "audio.n_mfcc=8", "audio.deltas=false"])


def test_restored_model_is_the_trained_one_in_eval_mode(tmp_path: Path) -> None:
    trained = _write(tmp_path / "ckpt", epoch=1, seed=7)
    # The saved spec says seed=7 too, so compare against a model built with another seed.
    ckpt = open_checkpoint(tmp_path / "ckpt")
    ckpt.state["config"]["model"]["seed"] = 0
    del ckpt.__dict__["loop"]  # read the spec again
    model = ckpt.restore_model()
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
        evaluate(tmp_path / "ckpt", [])


def test_a_checkpoint_never_supplies_the_cluster_or_storage_credentials(tmp_path: Path) -> None:
    # A downloaded checkpoint is data: its saved ray.* and storage keys are not settings for this run.
    model = build_model("late_concat", **MODEL_KWARGS)
    saved = load_config(
        None, [*PREPROCESS, "ray.address=ray://evil:10001", "data.storage_options={secret_key: s}"]
    )
    loop = LoopConfig(model=ModelSpec.from_dict({"preset": "late_concat", **MODEL_KWARGS}), resolved=saved)
    save_checkpoint(
        tmp_path, model=model, optimizer=torch.optim.AdamW(model.parameters()), scheduler=None, epoch=1,
        config=loop.to_state(),
    )  # fmt: skip
    (tmp_path / TOKENIZER_FILE).write_text("{}")
    cfg = open_checkpoint(tmp_path).config()
    assert cfg.ray.address is None and cfg.data.storage_options == {}
    assert open_checkpoint(tmp_path).config(["ray.address=auto"]).ray.address == "auto"


def test_a_checkpoint_of_the_first_format_still_loads_and_predicts_as_saved() -> None:
    # Written by the trainer before the typed LoopConfig (a flat dict with preset and model_kwargs).
    assert load_checkpoint(FIXTURE)["format"] == 1 and FORMAT == 3
    ckpt = open_checkpoint(FIXTURE)
    loop = ckpt.loop
    spec = loop.model
    assert (spec.preset, spec.shapes["image"], spec.shapes["audio"][0], spec.num_classes) == (
        "gated",
        (3, 16, 16),
        8,
        4,
    )
    assert (loop.epochs, loop.batch_size, loop.has_val, ckpt.epoch) == (2, 4, True, 2)
    assert ckpt.config().image.size == 16
    expected = torch.load(FIXTURE / "expected_logits.pt", weights_only=True)
    with torch.no_grad():
        logits = ckpt.restore_model()(expected["batch"])
    # The expected logits were computed on another machine: another CPU's kernels (vector width, summation
    # order) agree to about 4 decimals, not bit for bit. A wrong weight or layer moves them far more.
    torch.testing.assert_close(logits, expected["logits"], rtol=1e-3, atol=1e-4)


def test_the_loop_config_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    _write(tmp_path, epoch=3)
    loop = open_checkpoint(tmp_path).loop
    assert loop == LoopConfig(
        model=ModelSpec.from_dict({"preset": "late_concat", **MODEL_KWARGS}),
        resolved=load_config(None, PREPROCESS),
        batch_size=4,
    )


def test_a_file_that_is_not_weights_only_is_refused_in_one_line(tmp_path: Path) -> None:
    import collections

    # Any class outside torch's weights-only allow-list: loading it would mean running its pickled code.
    torch.save({"format": 2, "x": collections.OrderedDict, "y": Path("p")}, tmp_path / "state.pt")
    (tmp_path / TOKENIZER_FILE).write_text("{}")
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path)
    assert "cannot read the checkpoint" in str(err.value) and "\n" not in str(err.value)


def test_the_cli_refuses_a_non_weights_checkpoint_in_one_line(tmp_path: Path, capsys) -> None:
    """``mm-ray evaluate`` on a file that would need unpickling: one line naming it, exit 2, no traceback,
    and the planted object's code never runs."""
    import collections

    from mm_ray.cli.main import main

    torch.save({"format": 2, "x": collections.OrderedDict, "y": Path("p")}, tmp_path / "state.pt")
    (tmp_path / TOKENIZER_FILE).write_text("{}")
    assert main(["evaluate", str(tmp_path), str(tmp_path / "shards")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mm-ray evaluate: {tmp_path}: cannot read the checkpoint")
    assert err.count("\n") == 1 and "Traceback" not in err and "UnpicklingError" not in err.split(":")[0]

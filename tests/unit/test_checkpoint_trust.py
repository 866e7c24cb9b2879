"""A checkpoint is data: the ``model.builder`` a planted checkpoint names is never imported, whichever command
opens it. Every command that takes a checkpoint is run here on one (no Ray: the refusal comes first), and a
guard test fails when a command grows a checkpoint argument this table does not cover."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import pytest
import torch

import mm_ray.cli.main as cli
from mm_ray.config.load import ConfigError, load_config
from mm_ray.models import ModelSpec, build_model
from mm_ray.train.checkpoint import TOKENIZER_FILE, save_checkpoint
from mm_ray.train.encoder_weights import with_backbone_weights_from_runs
from mm_ray.train.spec import LoopConfig

PREPROCESS = ("image.size=16", "text.max_length=8", "audio.n_mels=8")
KWARGS = dict(modalities=("image", "text", "audio"), num_classes=3, image_size=16, vocab_size=30, n_mels=8,
              max_text_len=8, width=8, depth=1, fusion_dim=8)  # fmt: skip

# Command -> its argv with PLANTED (the hostile checkpoint), CLEAN (a preset checkpoint) and SHARDS filled in.
CHECKPOINT_COMMANDS = {
    ("evaluate", "checkpoint"): ["evaluate", "{PLANTED}", "{SHARDS}"],
    ("evaluate", "ensemble"): ["evaluate", "{CLEAN}", "{SHARDS}", "--ensemble", "{PLANTED}"],
    ("embed", "checkpoint"): ["embed", "{PLANTED}", "{SHARDS}"],
    ("predict", "checkpoint"): ["predict", "{PLANTED}", "{SHARDS}", "--out", "{OUT}"],
    ("export", "checkpoint"): ["export", "{PLANTED}", "--out", "{OUT}"],
    ("generate", "checkpoint"): ["generate", "{PLANTED}", "--from", "text", "--to", "image", "{SHARDS}"],
}


def _checkpoint(directory: Path, spec: ModelSpec, extra: tuple[str, ...] = ()) -> Path:
    model = build_model("late_concat", **{k: v for k, v in KWARGS.items()})  # any weights: never loaded
    loop = LoopConfig(model=spec, resolved=load_config(None, [*PREPROCESS, *extra]), batch_size=4)
    save_checkpoint(directory, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    scheduler=None, epoch=1, config=loop.to_state())  # fmt: skip
    (directory / TOKENIZER_FILE).write_text("{}")
    return directory


@pytest.fixture
def planted(tmp_path: Path, monkeypatch):
    """A module that leaves a mark when imported, importable from sys.path, and a checkpoint naming it as its
    ``mvae`` model's builder (what a hostile download would be). Yields (checkpoint, clean one, module, marker)."""
    module = f"planted_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{module}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\ndef make(**kwargs):\n    raise SystemExit\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    spec = ModelSpec.from_dict(
        {"preset": "mvae", **KWARGS, "builder": f"{module}:make", "builder_kwargs": {"filename": "victim"}}
    )
    hostile = _checkpoint(tmp_path / "planted", spec)
    clean = _checkpoint(tmp_path / "clean", ModelSpec.from_dict({"preset": "late_concat", **KWARGS}))
    yield hostile, clean, module, marker
    sys.modules.pop(module, None)


@pytest.mark.parametrize("command", sorted(CHECKPOINT_COMMANDS), ids="-".join)
def test_no_command_imports_the_builder_a_checkpoint_names(planted, tmp_path: Path, command, capsys) -> None:
    hostile, clean, module, marker = planted
    fill = {"{PLANTED}": str(hostile), "{CLEAN}": str(clean), "{SHARDS}": str(tmp_path / "shards"),
            "{OUT}": str(tmp_path / "out")}  # fmt: skip
    argv = [fill.get(word, word) for word in CHECKPOINT_COMMANDS[command]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    # Refused for the right reason (not some earlier failure that never reached the model), in one line.
    assert f"its model is built by '{module}:make', code named inside the checkpoint" in err
    assert err.count("\n") == 1
    assert not marker.exists() and module not in sys.modules


@pytest.fixture
def planted_modality(tmp_path: Path, monkeypatch):
    """A checkpoint whose run read a plug-in modality from a module that leaves a mark when imported (its spec
    is the test plug-in's ``depth``). Yields (checkpoint, clean one, plug-in path, marker)."""
    module = f"planted_modality_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{module}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nfrom depth_plugin import DEPTH\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    plugin = f"{module}:DEPTH"
    spec = ModelSpec.from_dict({"preset": "late_concat", **KWARGS, "plugins": [plugin]})
    hostile = _checkpoint(tmp_path / "planted", spec, extra=(f"modalities.plugins=[{plugin}]",))
    clean = _checkpoint(tmp_path / "clean", ModelSpec.from_dict({"preset": "late_concat", **KWARGS}))
    yield hostile, clean, plugin, marker
    sys.modules.pop(module, None)


@pytest.mark.parametrize("command", sorted(CHECKPOINT_COMMANDS), ids="-".join)
def test_no_command_imports_a_plugin_modality_a_checkpoint_names(
    planted_modality, tmp_path: Path, command, capsys
) -> None:
    hostile, clean, plugin, marker = planted_modality
    fill = {"{PLANTED}": str(hostile), "{CLEAN}": str(clean), "{SHARDS}": str(tmp_path / "shards"),
            "{OUT}": str(tmp_path / "out")}  # fmt: skip
    argv = [fill.get(word, word) for word in CHECKPOINT_COMMANDS[command]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"its model reads the plug-in modality '{plugin}', code named inside the checkpoint" in err
    assert not marker.exists() and plugin.split(":")[0] not in sys.modules


def test_the_same_checkpoint_runs_its_builder_only_when_the_caller_names_it(planted) -> None:
    # The control: the planted module does import when named, so the test above would see it if it did.
    from mm_ray.train.checkpoint import open_checkpoint

    hostile, _, module, marker = planted
    with pytest.raises(SystemExit):  # its make() runs: it was imported and called
        open_checkpoint(hostile, builder=f"{module}:make").restore_model()
    assert marker.read_text() == "ran"


def test_a_checkpoint_given_as_pretrained_encoder_weights_is_refused_too(planted, tmp_path: Path) -> None:
    # mm-ray train model.encoders.image.path=<checkpoint>: the weights are read, the builder never imported.
    hostile, _, module, marker = planted
    cfg = load_config(None, ["model.encoders.image.source=torchvision", "model.encoders.image.arch=resnet18",
                             f"model.encoders.image.path={hostile}", f"output_dir={tmp_path}"])  # fmt: skip
    with pytest.raises(ConfigError, match=f"model.encoders.image.path: .*{module}:make"):
        with_backbone_weights_from_runs(cfg)
    assert not marker.exists() and module not in sys.modules


def test_every_command_taking_a_checkpoint_is_in_the_table() -> None:
    """A new command (or option) that takes a checkpoint fails here until it joins ``CHECKPOINT_COMMANDS``."""
    parser = cli.build_parser()  # the command line's own parser: what each command accepts
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    taking = {
        (name, action.dest)
        for name, sub in commands.items()
        for action in sub._actions
        if action.dest == "checkpoint"
        or action.metavar == "CKPT"
        or "checkpoint" in (action.help or "").lower()
    }
    assert taking == set(CHECKPOINT_COMMANDS)

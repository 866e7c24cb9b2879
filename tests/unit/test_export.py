"""``mm-ray export`` / ``mm_ray.load_exported`` (no Ray): the exported model gives the checkpoint's logits, from the
safetensors weights, from the traced TorchScript file and from the ONNX file in ONNX Runtime, and an export naming
code is data like a checkpoint."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
import torch

pytest.importorskip("safetensors", reason="export needs the [export] extra (safetensors)")

import mm_ray.cli.main as cli
from mm_ray.config.load import ConfigError, load_config
from mm_ray.config.schema import FUSION_PRESET_NAMES
from mm_ray.inference.export import (
    ONNX_EXPORTABLE,
    ONNX_FILE,
    SPEC_FILE,
    TORCHSCRIPT_FILE,
    ExportSpec,
    PositionalModel,
    example_batch,
    export,
    load_exported,
    model_inputs,
)
from mm_ray.models import ModelSpec
from mm_ray.train.checkpoint import TOKENIZER_FILE, CheckpointError, open_checkpoint, save_checkpoint
from mm_ray.train.spec import LoopConfig

PREPROCESS = ("image.size=16", "text.max_length=8", "audio.n_mels=8", "data.labels=names",
              "data.classes=[cat,dog,eel]")  # fmt: skip
SHAPES = {"image": [3, 16, 16], "input_ids": [8], "attention_mask": [8], "audio": [8, 11]}
KWARGS = dict(modalities=["image", "text", "audio"], num_classes=3, shapes=SHAPES, vocab_size=30, width=8, depth=1,
              fusion_dim=8)  # fmt: skip


def _checkpoint(directory: Path, preset: str = "gated", extra: tuple[str, ...] = (), **spec_extra) -> Path:
    spec = ModelSpec.from_dict({"preset": preset, **KWARGS, **spec_extra})
    model = spec.build(load_pretrained=False) if not spec.builder else torch.nn.Linear(1, 1)
    # Trained weights differ from the seed's initial ones: perturb them, so a loader that rebuilt the model from
    # its spec alone (not the exported weights) would fail the comparison.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    loop = LoopConfig(model=spec, resolved=load_config(None, [*PREPROCESS, *extra]), batch_size=4)
    save_checkpoint(directory, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    scheduler=None, epoch=1, config=loop.to_state())  # fmt: skip
    (directory / TOKENIZER_FILE).write_text('{"model": "stand-in"}')
    return directory


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(batch)


def _onnx_logits(path: Path, inputs: tuple[str, ...], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """ONNX Runtime's logits for ``batch``: the inputs by name, as any program without mm_ray would feed them."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(inputs)
    return torch.from_numpy(session.run(None, {n: batch[n].numpy() for n in inputs})[0])


def test_the_exported_model_gives_the_checkpoints_logits(tmp_path: Path) -> None:
    ckpt_dir = _checkpoint(tmp_path / "ckpt", "gated")
    summary = export(ckpt_dir, tmp_path / "export", formats=("torchscript", "onnx"))
    assert summary["formats"] == ["safetensors", "torchscript", "onnx"]
    exported = load_exported(tmp_path / "export")
    reference = open_checkpoint(ckpt_dir).restore_model()
    batch = example_batch(reference_spec := exported.spec.model, rows=6, seed=7)
    want = _logits(reference, batch)
    torch.testing.assert_close(_logits(exported.model, batch), want, rtol=0, atol=1e-6)
    scripted = torch.jit.load(str(tmp_path / "export" / TORCHSCRIPT_FILE))
    with torch.no_grad():
        got = scripted(*(batch[name] for name in exported.spec.inputs))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    # ONNX, on a batch of 6 (exported with 4, checked with 5: the batch dimension is dynamic).
    torch.testing.assert_close(_onnx_logits(tmp_path / "export" / ONNX_FILE, exported.spec.inputs, batch), want,
                               rtol=0, atol=1e-4)  # fmt: skip
    # The spec, label map and tokenizer travel with it; nothing of the cluster or storage does.
    assert reference_spec == open_checkpoint(ckpt_dir).loop.model
    assert exported.classes == ["cat", "dog", "eel"]
    assert exported.tokenizer_json == '{"model": "stand-in"}'
    assert exported.spec.modalities == {"image": "builtin", "text": "builtin", "audio": "builtin"}
    assert exported.config().image.size == 16


def test_secrets_and_cluster_settings_stay_out_of_the_export(tmp_path: Path) -> None:
    ckpt_dir = _checkpoint(tmp_path / "ckpt", extra=("ray.address=ray://head:10001",
                                                     "data.storage_options.secret_key=hunter2"))  # fmt: skip
    export(ckpt_dir, tmp_path / "export")
    text = (tmp_path / "export" / SPEC_FILE).read_text()
    assert "hunter2" not in text and "head:10001" not in text
    assert ExportSpec.from_dict(json.loads(text)).to_dict() == json.loads(text)


@pytest.mark.slow  # ~2 s a preset on 2 busy cores; test_the_exported_model_... traces one in the default run
@pytest.mark.parametrize("preset", [*FUSION_PRESET_NAMES, "unimodal_image"])
def test_every_preset_traces_to_the_same_logits(preset: str) -> None:
    spec = ModelSpec.from_dict({"preset": preset, **KWARGS})
    model = spec.build(load_pretrained=False).eval()
    inputs = model_inputs(spec)
    with torch.no_grad():
        traced = torch.jit.trace(
            PositionalModel(model, inputs), tuple(example_batch(spec)[n] for n in inputs)
        )
    batch = example_batch(spec, rows=5, seed=3)
    want = _logits(model, batch)
    with torch.no_grad():
        torch.testing.assert_close(traced(*(batch[n] for n in inputs)), want, rtol=0, atol=1e-4)


@pytest.mark.slow  # ~4 s a preset on 2 busy cores; test_the_exported_model_... exports one in the default run
@pytest.mark.parametrize("preset", [*ONNX_EXPORTABLE, "unimodal_image", "unimodal_text", "unimodal_audio"])
def test_every_preset_exports_to_onnx_with_the_same_logits(tmp_path: Path, preset: str) -> None:
    from mm_ray.inference.export import onnx_to

    spec = ModelSpec.from_dict({"preset": preset, **KWARGS})
    model = spec.build(load_pretrained=False).eval()
    inputs = model_inputs(spec)
    onnx_to(model, inputs, spec, tmp_path / ONNX_FILE)
    batch = example_batch(spec, rows=3, seed=3)
    torch.testing.assert_close(_onnx_logits(tmp_path / ONNX_FILE, inputs, batch), _logits(model, batch),
                               rtol=0, atol=1e-4)  # fmt: skip


def test_onnx_refuses_a_recurrent_encoder_by_name_and_writes_nothing(tmp_path: Path) -> None:
    ckpt_dir = _checkpoint(tmp_path / "ckpt", "late_concat", text_encoder="lstm")
    with pytest.raises(
        ConfigError, match=r"recurrent layer \(encoders\.text\.lstm.*use --format torchscript"
    ):
        export(ckpt_dir, tmp_path / "export", formats=("onnx",))
    assert not (tmp_path / "export").exists()
    assert cli.main(["export", str(ckpt_dir), "--out", str(tmp_path / "export"), "--format", "onnx"]) == 2
    assert not (tmp_path / "export").exists()
    # The same checkpoint traces to TorchScript.
    export(ckpt_dir, tmp_path / "export", formats=("torchscript",))
    assert (tmp_path / "export" / TORCHSCRIPT_FILE).is_file()


def test_onnx_without_its_extra_says_which_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an environment without the extra raises
    with pytest.raises(ConfigError, match=r"pip install 'mm-ray\[onnx\]'"):
        export(_checkpoint(tmp_path / "ckpt"), tmp_path / "export", formats=("onnx",))
    assert not (tmp_path / "export").exists()


def test_an_export_naming_a_builder_or_plugin_is_refused_until_the_caller_names_it(tmp_path: Path) -> None:
    module = f"planted_{uuid.uuid4().hex[:8]}"
    export_dir = tmp_path / "export"
    export(_checkpoint(tmp_path / "ckpt"), export_dir)
    data = json.loads((export_dir / SPEC_FILE).read_text())
    data["model"]["builder"] = f"{module}:make"
    (export_dir / SPEC_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=f"built by '{module}:make', code named inside the export"):
        load_exported(export_dir)
    data["model"]["builder"] = ""
    data["model"]["plugins"] = [f"{module}:DEPTH"]
    (export_dir / SPEC_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=f"plug-in modality '{module}:DEPTH'"):
        load_exported(export_dir)
    assert module not in sys.modules


def test_cli_exports_and_refuses_to_overwrite_another_directory(tmp_path: Path, capsys) -> None:
    ckpt_dir = _checkpoint(tmp_path / "ckpt", "late_concat")
    assert cli.main(["export", str(ckpt_dir), "--out", str(tmp_path / "e"), "--format", "torchscript"]) == 0
    assert "torchscript" in capsys.readouterr().out
    assert (tmp_path / "e" / TORCHSCRIPT_FILE).is_file()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert cli.main(["export", str(ckpt_dir), "--out", str(tmp_path / "other")]) == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_plugin_modality_is_recorded_by_its_import_path() -> None:
    from mm_ray.inference.export import _origin

    spec = ModelSpec.from_dict({**KWARGS, "preset": "late_concat", "modalities": ["image", "depth"],
                                "plugins": ["depth_plugin:DEPTH"]})  # fmt: skip
    assert [_origin(m, spec) for m in spec.modalities] == ["builtin", "depth_plugin:DEPTH"]

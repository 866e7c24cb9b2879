"""A checkpoint's model as files a program without mm_ray's training side can load: weights, spec, tokenizer.

    summary = export("runs/demo", "exports/demo", formats=("torchscript",))
    exported = load_exported("exports/demo")         # no Ray, no checkpoint: the files alone
    logits = exported.model(batch)                   # batch: model-ready columns (exported.decode(...) makes them)
    scripted = torch.jit.load("exports/demo/model.torchscript.pt")   # positional tensors, see spec.inputs
    session = onnxruntime.InferenceSession("exports/demo/model.onnx")  # formats=("onnx",): named inputs

The directory holds:

- ``model.safetensors``: the weights (``safetensors``: tensors only, nothing to unpickle).
- ``model.json``: an ``ExportSpec``: the model spec (preset or ``model.builder``, modalities with each plug-in's
  ``package.module:NAME``, input shapes, vocabulary size), the preprocessing settings (the run's config without
  its cluster, storage credentials or code to import), the label map, and the input order of the traced formats.
- ``tokenizer.json``: the tokenizer the run was trained with.
- ``model.torchscript.pt`` with ``formats=("torchscript",)``: the model traced over positional tensors, in the
  order of ``ExportSpec.inputs``. Checked on export: its outputs on a batch equal the checkpoint's model's within
  ``TOLERANCE``, or the export fails naming the preset. Every preset traces (``TRACEABLE``); models of a
  ``model.builder`` are exported as weights only.
- ``model.onnx`` with ``formats=("onnx",)`` (the ``onnx`` extra): the same positional model through
  ``torch.export`` (``torch.onnx.export(dynamo=True)``), inputs named as ``ExportSpec.inputs``, output ``logits``,
  the batch dimension dynamic. Checked on export with ONNX Runtime the same way. Every preset with mm_ray's own
  encoders exports (``ONNX_EXPORTABLE``), but not a model with a recurrent layer such as the LSTM text encoder
  (``model.text_encoder=lstm``: its packed sequences have data-dependent lengths, which ``torch.export`` cannot
  trace): refused naming the layer.

An export is data like a checkpoint: the code it names (a ``model.builder``, plug-in modalities) is imported only
when the caller names the same itself (``load_exported(dir, builder=..., plugins=[...])``), as
``mm_ray.train.checkpoint`` does for checkpoints; an export of a checkpoint is made only under that same rule.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mm_ray.config.load import ConfigError, as_dict, config_from_dict, load_config
from mm_ray.config.schema import FUSION_PRESET_NAMES, Config
from mm_ray.models.spec import ModelSpec
from mm_ray.records import RecordError, plain, record_fields
from mm_ray.train.checkpoint import CheckpointError, open_checkpoint

EXPORT_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
TOKENIZER_FILE = "tokenizer.json"
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
MODEL_FORMATS = ("torchscript", "onnx")
"""Whole-model formats ``export`` writes on request, each checked against the model on export."""
FORMATS = ("safetensors", *MODEL_FORMATS)
"""What ``export`` writes: safetensors always, the ``MODEL_FORMATS`` on request."""
ONNX_OUTPUT = "logits"
TRACEABLE = FUSION_PRESET_NAMES
"""Presets checked to trace to TorchScript by a unit test: every fusion preset (in eval mode even ``mvae`` and
``cgan`` map tensors to logits) and the unimodal baselines. Models of a ``model.builder``: weights only."""
ONNX_EXPORTABLE = FUSION_PRESET_NAMES
"""Presets checked to export to ONNX by a test (mm_ray's own encoders; not with ``model.text_encoder=lstm``)."""
TOLERANCE = 1e-4
"""Largest absolute difference allowed between a traced model's logits and the checkpoint's model's."""


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """``model.json``: what rebuilds an exported model and feeds it (the ``to_dict``/``from_dict`` record)."""

    model: ModelSpec
    config: Mapping[str, Any]
    """The run's resolved config as plain data, without ``ray``, storage credentials, builder or plug-ins: the
    preprocessing settings, the member mapping and the labels (``ExportedModel.config`` reads it)."""
    modalities: Mapping[str, str]
    """Modality -> where its spec comes from: ``builtin`` or a plug-in's ``package.module:NAME``."""
    classes: tuple[str, ...] | None
    """The class names (label id = position) of a run trained on string labels, else None (ids)."""
    inputs: tuple[str, ...]
    """The traced formats' positional inputs: each modality's model-ready columns, then its presence flag."""
    formats: tuple[str, ...] = ("safetensors",)
    precision: str = "fp32"
    source: str = ""
    """The checkpoint it was exported from (informative)."""
    format: int = EXPORT_FORMAT

    def to_dict(self) -> dict[str, Any]:
        out = plain(self)
        out["model"] = self.model.as_dict()
        out["config"] = dict(self.config)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportSpec:
        fields = record_fields(cls, data, "export spec")
        if fields.get("format", EXPORT_FORMAT) != EXPORT_FORMAT:
            raise RecordError(f"export spec: format {fields['format']!r}, this code reads {EXPORT_FORMAT}")
        fields["model"] = ModelSpec.from_dict(fields["model"])
        classes = fields.get("classes")
        fields["classes"] = tuple(classes) if classes is not None else None
        for name in ("inputs", "formats"):
            if name in fields:
                fields[name] = tuple(fields[name])
        return cls(**fields)


def model_inputs(model_spec: ModelSpec) -> tuple[str, ...]:
    """The positional inputs of a traced model: per modality its model-ready columns, then ``has_<m>``."""
    registry = model_spec.registry()
    return tuple(
        name
        for m in model_spec.modalities
        for name in (*registry[m].column_names, registry[m].presence_column)
    )


class PositionalModel(nn.Module):
    """``model`` called with its inputs as positional tensors in the order ``inputs`` (what tracing needs)."""

    def __init__(self, model: nn.Module, inputs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.inputs = tuple(inputs)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.inputs, tensors, strict=True)))


def example_batch(model_spec: ModelSpec, rows: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of ``rows`` random model-ready rows of the spec's shapes (token ids below its vocabulary), with one
    modality missing from the first row, so a check covers the learned "missing" embeddings too."""
    generator = torch.Generator().manual_seed(seed)
    registry = model_spec.registry()
    batch: dict[str, torch.Tensor] = {}
    for i, m in enumerate(model_spec.modalities):
        spec = registry[m]
        for column in spec.columns:
            shape = (rows, *model_spec.shapes[column.name])
            dtype = torch.from_numpy(np.zeros(0, dtype=column.dtype)).dtype
            if dtype.is_floating_point:
                batch[column.name] = torch.rand(shape, generator=generator).to(dtype)
            else:
                high = max(2, min(model_spec.vocab_size or 2, 255 if dtype == torch.uint8 else 1 << 30))
                batch[column.name] = torch.randint(0, high, shape, generator=generator).to(dtype)
        present = torch.ones(rows, dtype=torch.bool)
        present[0] = i != 0
        batch[spec.presence_column] = present
    return batch


def export(
    checkpoint: str | Path,
    out: str | Path,
    *,
    formats: Sequence[str] = ("safetensors",),
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    log_to_mlflow: bool = False,
) -> dict[str, Any]:
    """Write the checkpoint's model to ``out`` (replaced if it holds an earlier export). ``formats``: besides the
    safetensors weights always written, ``torchscript`` and/or ``onnx``. ``overrides``/``config_file``: the caller's own
    ``model.builder`` and ``modalities.plugins`` (the only code the checkpoint may name), laid over its config.
    ``log_to_mlflow``: log the directory as a model artifact of a new MLflow run in the caller's ``track.mlflow``
    (``track.experiment``; from ``overrides``/``config_file``, never the checkpoint's).
    Raises ``CheckpointError``, ``ConfigError`` (also for a model ONNX cannot take), and ``ValueError`` when an
    exported format disagrees with the model."""
    started = time.perf_counter()
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"export formats: unknown {unknown}; known: {list(FORMATS)}")
    caller = load_config(config_file, overrides)  # schema only: nothing named here is imported yet
    ckpt = open_checkpoint(checkpoint, builder=caller.model.builder, plugins=caller.modalities.plugins)
    cfg = ckpt.config(overrides, config_file=config_file)
    model = ckpt.restore_model("cpu")
    spec = ckpt.loop.model
    traced = [f for f in MODEL_FORMATS if f in formats]
    if traced and spec.builder:
        raise ConfigError(
            f"export --format {traced[0]}: {spec.name!r} is a model.builder model: weights only"
        )
    if "onnx" in traced:
        _check_onnx_exportable(spec, model)
    exported = ExportSpec(
        model=spec,
        config=exported_config(cfg),
        modalities={m: _origin(m, spec) for m in spec.modalities},
        classes=tuple(ckpt.classes) if ckpt.classes else None,
        inputs=model_inputs(spec),
        formats=("safetensors", *traced),
        precision=ckpt.loop.precision,
        source=str(ckpt.directory),
    )
    out = Path(out)
    if out.exists():
        if not (out / SPEC_FILE).is_file():
            raise ConfigError(
                f"export --out {out}: exists and is not an earlier export; choose a new directory"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    from safetensors.torch import save_model

    save_model(
        model, str(out / WEIGHTS_FILE)
    )  # save_model: tied weights are written once, and load back tied
    (out / TOKENIZER_FILE).write_text(ckpt.tokenizer_json)
    if "torchscript" in traced:
        trace_to(model, exported.inputs, spec, out / TORCHSCRIPT_FILE)
    if "onnx" in traced:
        onnx_to(model, exported.inputs, spec, out / ONNX_FILE)
    (out / SPEC_FILE).write_text(json.dumps(exported.to_dict(), indent=2) + "\n")
    result = {"checkpoint": str(ckpt.directory), "preset": spec.name, "out": str(out),
              "formats": list(exported.formats), "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
    if log_to_mlflow:
        if not caller.track.mlflow:
            raise ConfigError("export --mlflow: set track.mlflow (the tracking URI) among the overrides")
        from mm_ray.track.artifacts import log_export

        result["mlflow_run"] = log_export(out, caller.track, run_name=f"export {spec.name}")
    return result


def exported_config(cfg: Config) -> dict[str, Any]:
    """``cfg`` as plain data without what is never data of a model: the cluster, storage credentials, the code to
    import (a builder, plug-ins: recorded in the model spec, trusted by the loader alone)."""
    raw = as_dict(cfg)
    raw["ray"] = {}
    raw["data"] = {**raw["data"], "storage_options": {}}
    raw["model"] = {**raw["model"], "builder": None}
    raw["modalities"] = {**raw["modalities"], "plugins": []}
    raw["track"] = {**raw["track"], "mlflow": None}
    return raw


def _origin(modality: str, spec: ModelSpec) -> str:
    """``builtin``, or the ``package.module:NAME`` of the plug-in whose spec is ``modality`` (imported: the caller
    trusted it when the checkpoint was opened, and its model is already built)."""
    from mm_ray.modalities.registry import BUILTIN, load_plugin

    if modality in BUILTIN:
        return "builtin"
    return next(p for p in spec.plugins if load_plugin(p).name == modality)


def trace_to(model: nn.Module, inputs: Sequence[str], spec: ModelSpec, path: Path) -> None:
    """Trace ``model`` over positional ``inputs`` to TorchScript at ``path``; ``ValueError`` unless the saved
    module's logits equal the model's within ``TOLERANCE`` on a batch other than the one traced with."""
    wrapped, example = _positional(model, inputs, spec)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about every Python-side constant (normalisation tensors, shape checks): the comparison
        # below is what tells whether the trace is right (torch also warns that TorchScript is deprecated in
        # favour of torch.export).
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(wrapped, example, check_trace=False)
        torch.jit.save(scripted, str(path))
        loaded = torch.jit.load(str(path))
        _check_outputs("torchscript", model, spec, path, lambda check: loaded(*(check[n] for n in inputs)))


def onnx_to(model: nn.Module, inputs: Sequence[str], spec: ModelSpec, path: Path) -> None:
    """Export ``model`` over positional ``inputs`` to ONNX at ``path`` (``torch.export``, a dynamic batch
    dimension); ``ConfigError`` when the model does not export, ``ValueError`` unless ONNX Runtime's logits equal
    the model's within ``TOLERANCE`` on a batch of another size than the one exported with."""
    import onnxruntime

    wrapped, example = _positional(model, inputs, spec)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on every decomposed op; checked below instead
        try:
            torch.onnx.export(
                wrapped,
                example,
                str(path),
                dynamo=True,
                input_names=list(inputs),
                output_names=[ONNX_OUTPUT],
                # One entry for the forward's one var-positional argument: a dynamic batch for each tensor in it.
                dynamic_shapes=(tuple({0: batch} for _ in inputs),),
                verbose=False,
            )
        except Exception as err:  # torch.export's errors have no common base: name the preset and the cause
            path.unlink(missing_ok=True)
            raise ConfigError(
                f"export --format onnx: {spec.name!r} does not export ({type(err).__name__}: {_first_line(err)}); "
                "--format torchscript may"
            ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _check_outputs(
        "onnx",
        model,
        spec,
        path,
        lambda check: torch.from_numpy(session.run([ONNX_OUTPUT], {n: check[n].numpy() for n in inputs})[0]),
    )


def _positional(
    model: nn.Module, inputs: Sequence[str], spec: ModelSpec
) -> tuple[PositionalModel, tuple[torch.Tensor, ...]]:
    """What both whole-model formats are made from: ``model`` over positional ``inputs`` and an example for them."""
    example = example_batch(spec, seed=0)
    return PositionalModel(model, inputs).eval(), tuple(example[name] for name in inputs)


def _check_outputs(fmt: str, model: nn.Module, spec: ModelSpec, path: Path, run) -> None:
    """``ValueError`` (and ``path`` removed) unless ``run(batch)`` gives ``model``'s logits within ``TOLERANCE``."""
    check = example_batch(spec, rows=5, seed=1)
    with torch.no_grad():
        want = model(check)
        got = run(check)
    diff = float((want - got).abs().max())
    if diff > TOLERANCE:
        path.unlink()
        raise ValueError(f"{fmt} export of {spec.name!r}: logits differ by {diff:.2e} (> {TOLERANCE})")


def _check_onnx_exportable(spec: ModelSpec, model: nn.Module) -> None:
    """``ConfigError`` before anything is written when ONNX cannot be had: the extra missing, or a recurrent
    layer (``torch.export`` cannot trace packed sequences)."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("export --format onnx needs the onnx extra: pip install 'mm-ray[onnx]'") from None
    recurrent = next((name for name, m in model.named_modules() if isinstance(m, nn.RNNBase)), None)
    if recurrent:
        raise ConfigError(
            f"export --format onnx: {spec.name!r} has a recurrent layer ({recurrent}; e.g. model.text_encoder=lstm) "
            "whose packed sequences have data-dependent lengths that torch.export cannot trace; use --format "
            "torchscript"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


@dataclasses.dataclass
class ExportedModel:
    """What ``load_exported`` returns: the model (eval mode, CPU), its spec, config and tokenizer."""

    directory: Path
    spec: ExportSpec
    model: nn.Module
    tokenizer_json: str

    @property
    def classes(self) -> list[str] | None:
        return list(self.spec.classes) if self.spec.classes else None

    def config(self, plugins: Sequence[str] = ()) -> Config:
        """The run's config (preprocessing, members, labels) with the trusted ``plugins``, for decoding members."""
        raw = dict(self.spec.config)
        raw["modalities"] = {**raw.get("modalities", {}), "plugins": list(plugins)}
        return config_from_dict(raw)


def load_exported(
    directory: str | Path, *, builder: str | None = None, plugins: Sequence[str] = ()
) -> ExportedModel:
    """The model of an export at ``directory``, rebuilt from ``model.json`` and ``model.safetensors`` (no Ray, no
    checkpoint). ``builder``/``plugins``: the code the caller trusts; an export naming other code is refused with
    a ``CheckpointError`` before anything is imported."""
    directory = Path(directory)
    try:
        spec = ExportSpec.from_dict(json.loads((directory / SPEC_FILE).read_text()))
    except FileNotFoundError:
        raise CheckpointError(f"{directory} is not an mm_ray export (no {SPEC_FILE})") from None
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{directory}: unusable {SPEC_FILE}: {err}") from None
    check_trusted(directory, spec.model, builder, plugins)
    from safetensors.torch import load_model

    model = spec.model.build(load_pretrained=False)
    load_model(model, str(directory / WEIGHTS_FILE))
    return ExportedModel(directory, spec, model.eval(), (directory / TOKENIZER_FILE).read_text())


def check_trusted(directory: Path, spec: ModelSpec, builder: str | None, plugins: Sequence[str]) -> None:
    """``CheckpointError`` when the export's model names code (a builder, plug-in modalities) the caller did not."""
    if spec.builder and builder != spec.builder:
        raise CheckpointError(
            f"{directory}: its model is built by {spec.builder!r}, code named inside the export; it is imported "
            f"only when you name it yourself: pass builder={spec.builder!r} if you trust that module"
        )
    foreign = [p for p in spec.plugins if p not in plugins]
    if foreign:
        raise CheckpointError(
            f"{directory}: its model reads the plug-in modality {foreign[0]!r}, code named inside the export; it "
            f"is imported only when you name it yourself: pass plugins={list(spec.plugins)} if you trust it"
        )

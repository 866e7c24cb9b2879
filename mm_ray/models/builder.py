"""Your own model: ``model.builder=package.module:function`` instead of a preset.

    # mypkg/models.py
    def my_fusion(*, modalities, num_classes, input_shapes, hidden=64, **sizes):
        return MyModule(...)     # nn.Module: model(batch) -> logits [B, num_classes]

    mm-ray train model.builder=mypkg.models:my_fusion 'model.builder_kwargs={hidden: 32}' ...

The function is called with the input sizes of the run's data as keyword arguments (``INPUT_ARGUMENTS``:
``modalities``, ``num_classes``, ``input_shapes`` = model-ready column -> per-row shape, and the built-in
modalities' sizes as the first builders took them: ``image_size``, ``vocab_size``, ``n_mels``, ``max_text_len``,
0 for a modality the run lacks; ``input_shapes`` only when the function takes it or ``**kwargs``), then
``model.builder_kwargs``, under the run's seed (``torch.manual_seed(train.seed)``, the global RNG restored
afterwards). The module it returns gets the batches the presets get: a dict of tensors of the model-ready columns
(``mm_ray.columns``; e.g. ``image`` uint8 ``[B,3,S,S]``, ``input_ids``/``attention_mask`` ``[B,L]``, ``audio``
float32 ``[B,n_mels,T]``, ``has_<modality>`` bool ``[B]``, ``label``), and returns logits. Optional: an ``encoders`` ``nn.ModuleDict`` keyed by modality
(``train.lr_by_modality`` then applies to each), an ``embed(batch)`` method like ``FusionModel.embed``
(``mm-ray embed`` needs it). The auxiliary and alignment losses need a ``FusionModel`` and are refused.

The module must be importable wherever the model is built: the Ray Train workers, and the process that runs
``mm-ray evaluate``/``embed`` (an installed package, ``PYTHONPATH``, or the job's ``working_dir``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mm_ray.config.load import ConfigError

INPUT_ARGUMENTS = ("modalities", "num_classes", "image_size", "vocab_size", "n_mels", "max_text_len")
"""The keyword arguments every builder receives (the model's input contract), ``input_shapes`` besides where the
function takes it."""


class BuilderError(ConfigError):
    """``model.builder`` cannot be imported or called, or did not return a module; the message names it (a
    ``ConfigError``: the command line reports it as a bad setting)."""


def resolve_builder(name: str) -> Callable[..., nn.Module]:
    """The function ``package.module:function`` names; ``BuilderError`` naming ``model.builder`` otherwise."""
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise BuilderError(f"model.builder: expected 'package.module:function', got {name!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or whatever the module raises while it is imported
        raise BuilderError(
            f"model.builder={name}: cannot import {module_name!r} ({type(err).__name__}: {err}); it must be "
            "importable where the model is built (install it, or put it on PYTHONPATH / in the job's working_dir)"
        ) from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise BuilderError(f"model.builder={name}: {module_name!r} has no function {attr!r}")
    return target


def build_custom(
    name: str, inputs: Mapping[str, Any], kwargs: Mapping[str, Any], *, seed: int = 0
) -> nn.Module:
    """Call builder ``name`` with ``inputs`` (``INPUT_ARGUMENTS``) and ``kwargs`` under ``seed``."""
    function = resolve_builder(name)
    if "input_shapes" in inputs and not _takes(function, "input_shapes"):
        inputs = {k: v for k, v in inputs.items() if k != "input_shapes"}
    clash = sorted(set(kwargs) & set(inputs))
    if clash:
        raise BuilderError(f"model.builder_kwargs: {clash} are set from the data, not by the config")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = function(**inputs, **kwargs)
        except TypeError as err:
            raise BuilderError(f"model.builder={name}: calling it failed: {err}") from None
    if not isinstance(model, nn.Module):
        raise BuilderError(f"model.builder={name}: returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _takes(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` accepts keyword ``name`` (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin or C function: pass only the guaranteed arguments
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)

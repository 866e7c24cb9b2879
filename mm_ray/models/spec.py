"""``ModelSpec``: everything needed to rebuild a model, as one frozen value a checkpoint can store.

    spec = ModelSpec(preset="gated", modalities=("image", "text", "audio"), num_classes=4, vocab_size=4096,
                     shapes={"image": [3, 48, 48], "input_ids": [32], "attention_mask": [32], "audio": [32, 101]},
                     width=32)
    model = spec.build()                        # == build_model("gated", ...)
    spec.as_dict()                              # plain data (checkpoints load with torch's weights_only)
    ModelSpec.from_dict(spec.as_dict()) == spec

The driver derives a spec from the config and the training data's shapes (``mm_ray.train.spec``); the
Train workers, ``mm-ray evaluate``, ``mm-ray embed`` and the ensembles rebuild models from it. Pure PyTorch.

Formats: the first named the built-in modalities' sizes one by one (``image_size``, ``max_text_len``, ``n_mels``,
``audio_frames``); ``from_dict`` reads those into ``shapes`` (``mm_ray.modalities.legacy``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from mm_ray.modalities.legacy import SIZE_FIELDS, shapes_from_sizes, sizes_from_shapes
from mm_ray.modalities.registry import Registry, registry_with
from mm_ray.models.builder import build_custom
from mm_ray.models.presets import build_model
from mm_ray.models.pretrained.encoder_spec import EncoderSpec
from mm_ray.records import plain, record_fields

# Fields that fix what a batch must look like: models that share a data pipeline agree on them.
INPUT_FIELDS = ("shapes", "vocab_size", "num_classes")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A preset and ``build_model``'s keyword arguments (see ``mm_ray.models.presets.build_model``)."""

    preset: str
    modalities: tuple[str, ...]
    num_classes: int
    shapes: Mapping[str, tuple[int, ...]]
    """Per-row shape of every model-ready column the model reads (the training data's)."""
    vocab_size: int = 0
    """The tokenizer's vocabulary size (modalities that tokenize)."""
    width: int = 64
    depth: int = 2
    fusion_dim: int = 64
    rank: int = 4
    dropout: float = 0.0
    modality_dropout: float = 0.0
    subset_dropout: float = 0.0
    seed: int = 0
    text_encoder: str = "transformer"
    bidirectional: bool = True
    fusion_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    aux_heads: bool = False
    """One linear head per modality (``train.aux_loss_weight`` > 0)."""
    align_dim: int = 0
    """Size of the alignment projections (``train.align_loss_weight`` > 0), 0 = none."""
    builder: str = ""
    """``package.module:function`` building the model instead of ``preset`` (``mm_ray.models.builder``)."""
    builder_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The builder's extra keyword arguments."""
    vae_beta: float = 1.0
    """KL weight of the ``mvae`` ELBO."""
    encoders: Mapping[str, EncoderSpec] = dataclasses.field(default_factory=dict)
    """Modality -> the spec of its encoder from torchvision / transformers (``mm_ray.models.pretrained.resolve``);
    {} = mm_ray's own encoders."""
    plugins: tuple[str, ...] = ()
    """The plug-in modalities' specs (``package.module:NAME``) the model's modalities come from, imported when it is
    built: a checkpoint's are checked against the user's own first (``mm_ray.train.trust``)."""

    def __post_init__(self) -> None:
        # Lists from JSON/YAML become tuples, so equal specs compare equal whatever they were read from.
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "shapes", {c: tuple(v) for c, v in self.shapes.items()})
        object.__setattr__(self, "plugins", tuple(self.plugins))
        object.__setattr__(self, "fusion_weights", dict(self.fusion_weights))
        object.__setattr__(self, "builder_kwargs", dict(self.builder_kwargs))
        object.__setattr__(self, "encoders", dict(self.encoders))

    @property
    def name(self) -> str:
        """What builds the model: the builder when there is one, else the preset."""
        return self.builder or self.preset

    def build(self, *, load_pretrained: bool = True) -> nn.Module:
        """The model this spec describes, with the spec's seed's initial weights (a ``FusionModel`` for presets).

        A spec with a ``builder`` imports and calls it: only build specs that came from your own settings. Never
        build a checkpoint's spec (``LoadedCheckpoint.loop.model``) here: ``LoadedCheckpoint.restore_model`` is
        the one way to a checkpoint's model, and it builds only a builder the caller named itself.
        Library ``encoders`` read their pretrained weights from disk unless ``load_pretrained`` is False (a model
        a checkpoint's weights will be loaded into needs no other)."""
        if self.builder:
            inputs = {
                "modalities": list(self.modalities),
                "num_classes": self.num_classes,
                **sizes_from_shapes(self.shapes, self.vocab_size),
                "input_shapes": {c: list(v) for c, v in self.shapes.items()},
            }
            return build_custom(self.builder, inputs, dict(self.builder_kwargs), seed=self.seed)
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("preset", "builder", "builder_kwargs", "plugins"):
            kwargs.pop(name)
        kwargs["shapes"] = self.shapes
        kwargs["fusion_weights"] = dict(self.fusion_weights)
        return build_model(self.preset, registry=self.registry(), load_pretrained=load_pretrained, **kwargs)

    def registry(self) -> Registry:
        """The built-in modalities plus the spec's plug-ins (imported here)."""
        return registry_with(self.plugins)

    def as_dict(self) -> dict[str, Any]:
        """Plain data: lists, dicts, numbers and strings only."""
        out = plain(self)
        out["builder_kwargs"] = dict(self.builder_kwargs)  # the builder's own values, as given
        if not self.encoders:  # mm_ray's own encoders: the spec is written as before library encoders existed
            del out["encoders"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """The spec ``as_dict`` wrote; ``ValueError`` naming any field this code does not know."""
        data = dict(data)
        if "shapes" not in data:  # the first format: one size field per built-in modality
            sizes = {name: data.pop(name) for name in SIZE_FIELDS if name in data}
            data["shapes"] = shapes_from_sizes(**sizes)
        fields = record_fields(cls, data, "model spec")
        fields["encoders"] = {m: EncoderSpec.from_dict(v, m) for m, v in fields.get("encoders", {}).items()}
        return cls(**fields)

    def inputs(self) -> dict[str, Any]:
        """The input-shape fields (``INPUT_FIELDS``) and their values."""
        return {name: getattr(self, name) for name in INPUT_FIELDS}

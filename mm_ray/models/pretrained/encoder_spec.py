"""``EncoderSpec``: what rebuilding one library encoder needs besides its weights, as one frozen record.

    spec = EncoderSpec(source="torchvision", kind=TORCHVISION_IMAGE, pool="avg", arch="resnet18", path="r18.pt",
                       freeze=True, unfreeze_after=2)
    spec.to_dict()                                   # plain data: what a checkpoint's model spec stores
    EncoderSpec.from_dict(spec.to_dict(), "image") == spec

``mm_ray.models.pretrained.resolve`` makes specs from ``model.encoders`` (checked on the driver);
``mm_ray.models.pretrained.backbones.build_encoder`` builds from them. A checkpoint's spec is data: a field this
code does not know is a ``RecordError`` naming it. The first layout (before backbone kinds) left ``kind`` to the
modality's name and saved an audio model's feature statistics as ``features``: ``from_dict`` reads it too
(``mm_ray.modalities.legacy.encoder_spec``). Pure Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mm_ray.modalities.legacy import encoder_spec
from mm_ray.records import as_mapping, plain, record_fields


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """An Audio Spectrogram Transformer's input normalisation (its feature extractor's ``mean``/``std``)."""

    mean: float
    std: float
    do_normalize: bool = True

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], what: str = "encoder spec: feature_stats") -> FeatureStats:
        return cls(**record_fields(cls, data, what))


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """One modality's encoder from a library: which backbone, where its files are, how it pools and trains."""

    source: str
    """``model.encoders.<m>.source``: ``torchvision`` or ``transformers``."""
    kind: str
    """The backbone (``backbones.TORCHVISION_IMAGE``, ``HF_TEXT``, ``HF_AUDIO``): the modality's word for it."""
    pool: str
    """How the backbone's output becomes one vector: ``avg`` (torchvision), ``cls`` or ``mean``."""
    freeze: bool = False
    unfreeze_after: int | None = None
    path: str | None = None
    """The weights: a state dict file (torchvision; None = random weights) or a model directory (transformers)."""
    arch: str | None = None
    """A torchvision architecture (``resnet18``)."""
    mean: tuple[float, ...] | None = None
    """Image normalisation of a torchvision model (None: ImageNet's)."""
    std: tuple[float, ...] | None = None
    hf_config: Mapping[str, Any] | None = None
    """A transformers model's ``config.json`` content: the architecture is rebuilt from it without the directory."""
    feature_stats: FeatureStats | None = None
    """An audio model's input normalisation."""

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.hf_config is not None:
            object.__setattr__(self, "hf_config", dict(self.hf_config))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (checkpoints load with torch's ``weights_only``)."""
        return plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], modality: str) -> EncoderSpec:
        """The spec ``to_dict`` wrote, or one of the first layout, for ``modality``'s encoder."""
        what = f"encoder spec of {modality!r}"
        fields = record_fields(cls, encoder_spec(modality, as_mapping(data, what)), what)
        if fields.get("feature_stats") is not None:
            fields["feature_stats"] = FeatureStats.from_dict(
                fields["feature_stats"], f"{what}: feature_stats"
            )
        return cls(**fields)

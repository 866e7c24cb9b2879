"""``ModalitySpec``: everything mm_ray knows about one modality, in one frozen value.

A modality is a kind of tar member (an image, a caption, a clip, a vector) with its own decoder, its own
model-ready columns and its own encoder. The rest of mm_ray (reader, pools, resource plan, cache, trainer,
metrics, reports) iterates the specs of a ``Registry`` (``mm_ray.modalities.registry``) and never names a
modality itself. A new modality is one spec::

    DEPTH = ModalitySpec(
        name="depth",
        extensions=("depth.png",),
        settings_type=DepthSettings,                    # a frozen dataclass: its config section
        columns=(ColumnSpec("depth", "float32"),),
        shapes=lambda s: {"depth": (1, s.size, s.size)},
        preprocessor=DepthPreprocessor,                 # DepthPreprocessor(**kwargs)(batch) -> batch
        preprocessor_kwargs=lambda s, ctx: {"size": s.size},
        encoder=lambda ctx: DepthEncoder(out_dim=ctx.out_dim),
    )

and a user names it in their config: ``modalities.plugins: [mypkg.depth:DEPTH]`` (README "Your own modality").

The batch contract of a preprocessor (what the actor pools call): it gets a ``dict[str, numpy.ndarray]`` holding
``raw_column`` (object array: the member's bytes, or None where the sample has none) and returns it with
``raw_column`` removed and added: every model-ready column (``[N, *shape]``, zeros where absent or rejected), the
bool ``presence_column`` and the reject columns (``mm_ray.columns.REJECT``/``REJECT_DETAIL``; ``""`` = fine).
It never raises on one bad sample. ``mm_ray.modalities.rows.RowPreprocessor`` does the batching for a decoder
of one member at a time. Pure Python: no Ray, no torch at import time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Shapes = Mapping[str, tuple[int, ...]]
"""Model-ready column name -> the shape of one row (``[3, 224, 224]`` for an image)."""


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    """One model-ready column a modality's preprocessor writes: its name and numpy dtype."""

    name: str
    dtype: str
    """A numpy dtype name (``uint8``, ``int32``, ``float32``, ...)."""

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class PreprocessContext:
    """What a preprocessor's keyword arguments may depend on besides the modality's own settings."""

    extensions: tuple[str, ...]
    """The member extensions read as this modality (``data.members.<name>``)."""
    augment: Any = None
    """The ``train.augment`` settings when the pools draw decode-time augmentation (training streams), else None."""
    tokenizer_json: str = ""
    """The run's tokenizer (JSON), for modalities that tokenize."""


@dataclasses.dataclass(frozen=True)
class EncoderContext:
    """What an encoder is built from: the modality's model-ready shapes and the model's size settings."""

    shapes: Shapes
    """This modality's columns and their per-row shapes."""
    out_dim: int
    """The encoder's output size (``model.fusion_dim``)."""
    width: int = 64
    depth: int = 2
    dropout: float = 0.0
    vocab_size: int = 0
    """The tokenizer's vocabulary size (modalities that tokenize)."""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Model options some encoders read (``text_encoder``, ``bidirectional``)."""


def raw_column(name: str) -> str:
    """The reader's column holding modality ``name``'s member bytes."""
    return f"{name}_bytes"


def presence_column(name: str) -> str:
    """The bool column saying which rows hold modality ``name``."""
    return f"has_{name}"


def _no_augment(values: Any, present: Any, generator: Any, augment: Any, settings: Any) -> Any:
    return values


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """One modality: members, settings, decoder, columns, encoder and the policies around them.

    Only ``name`` through ``encoder`` are required; the rest have defaults that suit a small modality.
    """

    name: str
    """The modality's name: config keys, subset keys (``image+text``), metrics and column prefixes use it."""
    extensions: tuple[str, ...]
    """Default tar member extensions read as this modality (first match wins)."""
    settings_type: type
    """Frozen dataclass of the modality's config section (its fields get checked like every config key)."""
    columns: tuple[ColumnSpec, ...]
    """The model-ready columns its preprocessor writes, the first being the one its encoder mainly reads."""
    shapes: Callable[[Any], Shapes]
    """settings -> per-row shape of every column (what a cache manifest records)."""
    preprocessor: Callable[..., Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]
    """Called with ``preprocessor_kwargs`` inside each pool actor; the result is called on every batch."""
    preprocessor_kwargs: Callable[[Any, PreprocessContext], dict[str, Any]]
    """settings, context -> the preprocessor's keyword arguments (plain, picklable data)."""
    encoder: Callable[[EncoderContext], Any]
    """The default encoder: context -> ``nn.Module`` mapping this modality's columns to ``[B, out_dim]``."""
    encode: Callable[[Any, Mapping[str, Any]], Any] | None = None
    """How the model feeds its columns to the encoder: ``(encoder, {column: tensor}) -> [B, dim]`` (rows of an
    absent modality already zeroed). None: the first column, cast to the encoder's dtype, is its one input."""
    cost_share: float = 0.1
    """Relative CPU cost of decoding one sample, for splitting a pool budget between modalities."""
    pool_cpus: float = 0.3
    """CPUs per actor of this modality's own pool (``pools.layout=per_modality``) unless configured."""
    reasons: tuple[str, ...] = ()
    """Quarantine reasons its preprocessor may write (documentation and checks)."""
    augment: Callable[[Any, Any, Any, Any, Any], Any] = _no_augment
    """Train-time batch augmentation of the main column: ``(tensor [B, ...], presence bool [B] or None,
    torch.Generator, train.augment settings, the modality's settings) -> tensor``; rows without the modality
    must come back unchanged. Draws come from the generator only, so a seed repeats them."""
    json_fallback: bool = False
    """When a sample has no member of this modality, a string field of its JSON member
    (``data.members.json_text_field``) is read as the member instead (captions in img2dataset metadata)."""
    library: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    """Encoder sources of ``model.encoders.<name>.source`` this modality takes besides ``builtin`` ->
    the kind of library backbone that serves it (``mm_ray.models.pretrained``); read it with ``library_kinds``."""
    variable_axes: tuple[tuple[str, int], ...] = ()
    """``(column, axis)`` pairs whose size may differ from the training data's (the encoder pools over them: an
    audio clip's frames); every other axis of a model-ready column must match what the model was trained on."""
    record: Callable[[Any], dict[str, Any]] = dataclasses.asdict
    """settings -> what a cache manifest records of them: the settings the model-ready bytes depend on."""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(
                f"modality name {self.name!r}: use a lower-case identifier (it names config keys)"
            )
        if not dataclasses.is_dataclass(self.settings_type):
            raise ValueError(f"modality {self.name!r}: settings_type must be a dataclass")
        if not self.columns:
            raise ValueError(f"modality {self.name!r}: needs at least one model-ready column")
        object.__setattr__(self, "extensions", tuple(str(e).lower().lstrip(".") for e in self.extensions))
        # Stored as pairs: a spec is hashable (pools and registries are keyed by it).
        pairs = self.library.items() if isinstance(self.library, Mapping) else self.library
        object.__setattr__(self, "library", tuple((str(k), str(v)) for k, v in pairs))

    @property
    def library_kinds(self) -> dict[str, str]:
        """Library encoder source -> backbone kind (``library`` as a mapping)."""
        return dict(self.library)

    @property
    def raw_column(self) -> str:
        """The reader's column of this modality's member bytes."""
        return raw_column(self.name)

    @property
    def presence_column(self) -> str:
        """bool per row: the sample had (and decoded) this modality."""
        return presence_column(self.name)

    @property
    def column(self) -> str:
        """The main model-ready column (the first of ``columns``)."""
        return self.columns[0].name

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def row_bytes(self, shapes: Shapes) -> int:
        """In-memory bytes of one row's model-ready columns (plus its presence flag) under ``shapes``."""
        return 1 + sum(math.prod(shapes[c.name]) * c.itemsize for c in self.columns)

    def default_settings(self) -> Any:
        return self.settings_type()

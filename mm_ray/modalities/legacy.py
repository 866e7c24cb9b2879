"""What older files and callers said about the built-in modalities, in their own words, and its translation.

Before modalities were specs, model specs, checkpoints, cache manifests and builder functions named the
built-in modalities' sizes one by one (``image_size``, ``max_text_len``, ``n_mels``, ``audio_frames``,
``text_max_length``). Files written then still load; these functions turn their fields into the registry's terms
(model-ready column shapes keyed by column) and back for the builder contract that still takes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mm_ray.modalities.audio import AUDIO
from mm_ray.modalities.image import IMAGE
from mm_ray.modalities.registry import BUILTIN
from mm_ray.modalities.spec import Shapes
from mm_ray.modalities.text import TEXT
from mm_ray.modalities.text_decode import ATTENTION_MASK, INPUT_IDS
from mm_ray.records import RecordError

SIZE_FIELDS = ("image_size", "max_text_len", "n_mels", "audio_frames")
"""The per-modality size arguments of the first model-spec format and of ``build_model``'s old signature."""


def shapes_from_sizes(
    *, image_size: int | None = None, max_text_len: int | None = None, n_mels: int | None = None,
    audio_frames: int = 0,
) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """Column shapes from the old size fields (those given); ``audio_frames`` 0 means "not recorded"."""
    shapes: dict[str, tuple[int, ...]] = {}
    if image_size is not None:
        shapes[IMAGE.column] = (3, image_size, image_size)
    if max_text_len is not None:
        shapes[INPUT_IDS] = shapes[ATTENTION_MASK] = (max_text_len,)
    if n_mels is not None:
        shapes[AUDIO.column] = (n_mels, audio_frames)
    return shapes


def sizes_from_shapes(shapes: Shapes, vocab_size: int) -> dict[str, int]:
    """The old builder inputs (``image_size``, ``vocab_size``, ``n_mels``, ``max_text_len``) from column shapes:
    what a ``model.builder`` function receives beside ``input_shapes``; 0 for a modality the run lacks."""
    return {
        "image_size": shapes[IMAGE.column][-1] if IMAGE.column in shapes else 0,
        "vocab_size": vocab_size,
        "n_mels": shapes[AUDIO.column][0] if AUDIO.column in shapes else 0,
        "max_text_len": shapes[INPUT_IDS][0] if INPUT_IDS in shapes else 0,
    }


def encoder_spec(modality: str, saved: Mapping[str, Any]) -> dict[str, Any]:
    """A library encoder's spec as a checkpoint saved it, in today's words: the backbone ``kind`` that the first
    format left to the modality's name, and an audio model's feature statistics, once saved as ``features``."""
    spec = dict(saved)
    if "kind" not in spec and modality in BUILTIN:
        kind = BUILTIN[modality].library_kinds.get(spec.get("source"))
        if kind is not None:
            spec["kind"] = kind
    if "features" in spec:
        spec["feature_stats"] = spec.pop("features")
    return spec


FIRST_PREPROCESS_FIELDS = (IMAGE.name, AUDIO.name, "text_max_length")
"""The per-modality fields of a cache manifest's ``preprocess`` record in the first layout."""


def first_preprocess_sections(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A cache manifest's ``preprocess`` record of the first layout (``image`` and ``audio`` sections and
    ``text_max_length``; without ``classes``/``members``) -> modality name -> its recorded settings, as the
    current layout's ``modalities`` holds them. ``RecordError`` naming a field of no layout."""
    unknown = sorted(set(record) - set(FIRST_PREPROCESS_FIELDS))
    if unknown:
        raise RecordError(f"cache manifest: preprocess: unknown field(s) {unknown}")
    sections = {IMAGE.name: dict(record[IMAGE.name]), AUDIO.name: dict(record[AUDIO.name])}
    if "text_max_length" in record:
        sections[TEXT.name] = {"max_length": record["text_max_length"]}
    return sections


def manifest_shapes(shapes: Mapping[str, Any]) -> dict[str, list[int]]:
    """A cache manifest's ``shapes`` with the columns the first format left out (the text mask, which has the
    ids' shape)."""
    out = {c: list(v) for c, v in shapes.items()}
    if INPUT_IDS in out and ATTENTION_MASK not in out:
        out[ATTENTION_MASK] = list(out[INPUT_IDS])
    return out

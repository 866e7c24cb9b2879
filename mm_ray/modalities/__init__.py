"""Modalities as specs: each modality is one ``ModalitySpec``; a ``Registry`` holds a run's in canonical order.

    from mm_ray.modalities import modalities_of
    reg = modalities_of(cfg)          # data.modalities, plug-ins included
    for spec in reg: spec.name, spec.raw_column, spec.column_names, spec.preprocessor, spec.encoder

Built-in: ``image``, ``text``, ``audio``, ``features`` (``.npy`` arrays, opt-in). Your own: a ``ModalitySpec`` in
your package, named in ``modalities.plugins`` (README "Your own modality").
"""

from mm_ray.modalities.registry import (
    BUILTIN,
    DEFAULT_MODALITIES,
    Registry,
    checked,
    encoder_config_of,
    extensions_of,
    modalities_of,
    model_modalities,
    pool_key,
    pool_of,
    registry_with,
    settings_of,
)
from mm_ray.modalities.rows import RowPreprocessor
from mm_ray.modalities.spec import ColumnSpec, EncoderContext, ModalitySpec, PreprocessContext

__all__ = [
    "BUILTIN",
    "DEFAULT_MODALITIES",
    "ColumnSpec",
    "EncoderContext",
    "ModalitySpec",
    "PreprocessContext",
    "Registry",
    "RowPreprocessor",
    "checked",
    "encoder_config_of",
    "extensions_of",
    "modalities_of",
    "model_modalities",
    "pool_key",
    "pool_of",
    "registry_with",
    "settings_of",
]

"""The ``text`` modality: UTF-8 captions -> token ids + attention mask -> a transformer or (bi-)LSTM encoder.

Settings: the ``text`` config section (``TextConfig``: tokenizer, vocabulary, max_length). Decoding:
``TextPreprocessor`` (``mm_ray.modalities.text_decode``) with the run's tokenizer (a HF ``tokenizers`` WordPiece
trained on the shards' captions, or a text encoder's own). A sample without a ``.txt`` member may take its text
from a JSON member's field (``data.members.json_text_field``). No train-time augmentation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mm_ray.config.schema import TextConfig
from mm_ray.modalities.spec import ColumnSpec, EncoderContext, ModalitySpec, PreprocessContext
from mm_ray.modalities.text_decode import ATTENTION_MASK, INPUT_IDS, NAME, TextPreprocessor
from mm_ray.quarantine import Reason


def _shapes(settings: TextConfig) -> dict[str, tuple[int, ...]]:
    return {INPUT_IDS: (settings.max_length,), ATTENTION_MASK: (settings.max_length,)}


def _preprocessor(**kwargs: Any) -> TextPreprocessor:
    # HF tokenizers would start a thread per core in every actor; the pool is the parallelism.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return TextPreprocessor(**kwargs)


def _preprocessor_kwargs(settings: TextConfig, ctx: PreprocessContext) -> dict[str, Any]:
    return {
        "tokenizer": ctx.tokenizer_json,
        "max_length": settings.max_length,
        "max_caption_bytes": settings.max_caption_bytes,
    }


def _encoder(ctx: EncoderContext) -> Any:
    # Imported here: the decoding actors import this module and never need torch.
    from mm_ray.encoders.builtin import LSTMTextEncoder, TextEncoder

    common = {
        "vocab_size": ctx.vocab_size,
        "dim": ctx.width,
        "depth": ctx.depth,
        "max_len": ctx.shapes[INPUT_IDS][0],
        "dropout": ctx.dropout,
        "out_dim": ctx.out_dim,
    }
    if ctx.options.get("text_encoder", "transformer") == "lstm":
        return LSTMTextEncoder(**common, bidirectional=ctx.options.get("bidirectional", True))
    # The text transformer's width is the embedding size; 4 heads need it divisible by 4.
    return TextEncoder(**common)


def _encode(encoder: Any, columns: Mapping[str, Any]) -> Any:
    return encoder(columns[INPUT_IDS], columns[ATTENTION_MASK])


def _record(settings: TextConfig) -> dict[str, Any]:
    # What the rows depend on besides the tokenizer itself (which travels as its own file).
    return {"max_length": settings.max_length}


TEXT = ModalitySpec(
    name=NAME,
    extensions=("txt",),
    settings_type=TextConfig,
    columns=(ColumnSpec(INPUT_IDS, "int32"), ColumnSpec(ATTENTION_MASK, "int8")),
    shapes=_shapes,
    preprocessor=_preprocessor,
    preprocessor_kwargs=_preprocessor_kwargs,
    encoder=_encoder,
    encode=_encode,
    # Tokenisation ~0.01 ms a sample; a small share keeps its single actor from starving.
    cost_share=0.05,
    pool_cpus=0.25,
    reasons=(Reason.BAD_TEXT_ENCODING.value, Reason.CAPTION_TOO_LONG.value),
    json_fallback=True,
    library={"transformers": "hf_text"},
    record=_record,
    description="UTF-8 text -> token ids + mask; transformer or (bi-)LSTM encoder (or a HF text model)",
)

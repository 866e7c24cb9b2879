"""Text preprocessing: UTF-8 bytes -> fixed-length token ids and attention mask.

Use it as a callable class on numpy batches (a Ray Data actor pool calls it the same way)::

    pre = TextPreprocessor(tokenizer_json, max_length=32)   # a path, the JSON string, or a Tokenizer
    batch = pre({"text_bytes": np.array([b"a red bus", None], dtype=object)})
    batch["input_ids"]       # int32 [2, 32]: [CLS] a red bus [SEP] [PAD] ...; row 1 all zeros
    batch["attention_mask"]  # int8  [2, 32]: 1 on real tokens, 0 on padding
    batch["has_text"]        # [True, False]

``pre.decode(data)`` does one sample and raises ``SampleError(Reason.BAD_TEXT_ENCODING)`` on bytes
that are not UTF-8. Texts longer than ``max_length`` tokens are cut (keeping [CLS] and [SEP]).
The whole batch is tokenized in one call into the Rust tokenizer, which uses several threads
(set ``TOKENIZERS_PARALLELISM=false`` where a worker must stay on one core).
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from mm_ray.columns import REJECT, REJECT_DETAIL
from mm_ray.modalities.spec import presence_column, raw_column
from mm_ray.preprocess.batch import decode_rows, reject_columns
from mm_ray.preprocess.tokenizer import PAD, load_tokenizer
from mm_ray.quarantine import Reason, SampleError

NAME = "text"
INPUT_IDS, ATTENTION_MASK = "input_ids", "attention_mask"
"""The model-ready columns: int32 token ids and the int8 attention mask, ``[max_length]`` each."""
TEXT_BYTES, HAS_TEXT = raw_column(NAME), presence_column(NAME)

PAD_TOKENS = (PAD, "<pad>")
"""Padding tokens looked for, in order: mm_ray's and BERT's ``[PAD]``, then RoBERTa-style ``<pad>`` (a text
encoder's own tokenizer, ``model.encoders.text``)."""


class TextPreprocessor:
    """Tokenize UTF-8 text to ``input_ids`` int32 ``[max_length]`` and ``attention_mask`` int8.

    Args:
        tokenizer: a ``Tokenizer``, a path to a ``tokenizer.json``, or its JSON text. A given
            ``Tokenizer`` is copied, so the caller's object is never changed.
        max_length: tokens per row, [CLS] and [SEP] included; shorter texts are right-padded.
        max_caption_bytes: longer texts are rejected (``CAPTION_TOO_LONG``) before decoding or tokenizing.
    """

    def __init__(self, tokenizer: str | Tokenizer, max_length: int = 32, max_caption_bytes: int = 65536):
        if max_length < 2:
            raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
        source = tokenizer.to_str() if isinstance(tokenizer, Tokenizer) else tokenizer
        # A private copy: padding/truncation are settings on the tokenizer object itself.
        self._tokenizer = load_tokenizer(source)
        pad_token = next((t for t in PAD_TOKENS if self._tokenizer.token_to_id(t) is not None), None)
        if pad_token is None:
            raise ValueError(f"the tokenizer has no padding token (one of {', '.join(PAD_TOKENS)})")
        pad_id = self._tokenizer.token_to_id(pad_token)
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.enable_padding(
            direction="right", pad_id=pad_id, pad_token=pad_token, length=max_length
        )
        self.max_length = max_length
        self.max_caption_bytes = max_caption_bytes
        self.pad_id = pad_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Replace ``text_bytes`` with ``input_ids``, ``attention_mask`` and ``has_text``."""
        raw = batch.pop(TEXT_BYTES)
        n = len(raw)
        reject, detail = reject_columns(batch, n)
        texts: list[str] = []
        # Decode every row first, then tokenize all valid texts in one batch call.
        has = decode_rows(raw, reject, detail, lambda _i, data: texts.append(self._text(data)))
        ids = np.zeros((n, self.max_length), dtype=np.int32)
        mask = np.zeros((n, self.max_length), dtype=np.int8)
        if texts:
            ids[has], mask[has] = self._encode(texts)
        batch[INPUT_IDS] = ids
        batch[ATTENTION_MASK] = mask
        batch[HAS_TEXT] = has
        batch[REJECT] = reject
        batch[REJECT_DETAIL] = detail
        return batch

    def decode(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        """One text member -> (input_ids int32 [max_length], attention_mask int8 [max_length])."""
        ids, mask = self._encode([self._text(data)])
        return ids[0], mask[0]

    def _text(self, data: bytes) -> str:
        if len(data) > self.max_caption_bytes:
            raise SampleError(
                Reason.CAPTION_TOO_LONG,
                f"{len(data):,} bytes, over text.max_caption_bytes={self.max_caption_bytes:,}",
            )
        return decode_utf8(data)

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # encode_batch_fast skips character offsets, which nothing downstream uses.
        encodings = self._tokenizer.encode_batch_fast(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int32)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int8)
        return ids, mask


def decode_utf8(data: bytes) -> str:
    """Strict UTF-8 decode; raises ``SampleError(BAD_TEXT_ENCODING)`` naming the bad byte offset."""
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as err:
        raise SampleError(Reason.BAD_TEXT_ENCODING, str(err)) from None

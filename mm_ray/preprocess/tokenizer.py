"""Train, save and load the WordPiece tokenizer used for the text modality.

Train once on the captions, save, and ship the JSON to wherever the text is tokenized::

    tok = train_tokenizer(captions, vocab_size=8192)
    tok.save("tokenizer.json")
    tok = load_tokenizer("tokenizer.json")   # a path ...
    tok = load_tokenizer(tok.to_str())       # ... or the JSON itself (no shared filesystem needed)

The tokenizer is BERT-style: lower-cased, NFD-normalized with accents stripped, split on whitespace
and punctuation, WordPiece sub-words with a ``##`` continuation prefix, and ``[CLS] text [SEP]``
added on encode. Special tokens have fixed ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3,
so an all-zero row of token ids is all padding.

Training is deterministic: the same texts give the same vocabulary and ids in every process.
The Hugging Face trainer on its own is not (huggingface/tokenizers#1794): it numbers the ``##``
continuation tokens in hash-map order, and those numbers break ties between merges of equal count.
``train_tokenizer`` therefore registers every ``##x`` token up front, in sorted order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP)  # in id order: [PAD] is 0
CONTINUATION_PREFIX = "##"

# Texts normalized per Python call when collecting the alphabet: one call per caption would
# spend more time crossing into Rust than normalizing.
_ALPHABET_CHUNK = 1024


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 1) -> Tokenizer:
    """Train a WordPiece tokenizer on ``texts`` (read into memory: they are passed over twice).

    ``vocab_size`` is an upper bound that includes the special tokens and the alphabet; a small
    corpus yields a smaller vocabulary. ``min_frequency`` is the least count a merge needs.
    """
    corpus = list(texts)
    tokenizer = _empty_tokenizer()
    continuation = [CONTINUATION_PREFIX + ch for ch in sorted(_continuation_chars(tokenizer, corpus))]
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *continuation],
        continuing_subword_prefix=CONTINUATION_PREFIX,
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    # The "##x" tokens were passed as special tokens only to fix their ids; as added tokens they
    # would match literal "##x" in raw text. Keep them in the vocabulary, drop them as added tokens.
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in SPECIAL_TOKENS]
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, tokenizer.token_to_id(CLS)), (SEP, tokenizer.token_to_id(SEP))],
    )
    return tokenizer


def load_tokenizer(path_or_json: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer from a ``tokenizer.json`` path (or a directory holding one), or from the
    JSON text itself. Raises ``FileNotFoundError`` / ``ValueError`` naming what could not be read.
    """
    if isinstance(path_or_json, str) and path_or_json.lstrip().startswith("{"):
        try:
            return Tokenizer.from_str(path_or_json)
        except Exception as err:
            raise ValueError(f"invalid tokenizer JSON string: {err}") from err
    path = Path(path_or_json)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:
        raise ValueError(f"{path} is not a valid tokenizer.json: {err}") from err


def _empty_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix=CONTINUATION_PREFIX))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    return tokenizer


def _continuation_chars(tokenizer: Tokenizer, corpus: list[str]) -> set[str]:
    """Characters that occur after the first position of a pre-tokenized word (they need ``##x``)."""
    chars: set[str] = set()
    for start in range(0, len(corpus), _ALPHABET_CHUNK):
        # Texts are joined with a space: words never span two texts, and the normalizer maps
        # newlines and tabs to spaces anyway.
        text = tokenizer.normalizer.normalize_str(" ".join(corpus[start : start + _ALPHABET_CHUNK]))
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text):
            chars.update(word[1:])
    return chars

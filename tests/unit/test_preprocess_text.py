"""train_tokenizer / load_tokenizer and TextPreprocessor with a real (tiny) trained WordPiece tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from mm_ray.columns import REJECT, REJECT_DETAIL
from mm_ray.modalities.text_decode import TextPreprocessor
from mm_ray.preprocess.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_tokenizer
from mm_ray.quarantine import Reason, SampleError

ATTENTION_MASK = "attention_mask"
HAS_TEXT = "has_text"
INPUT_IDS = "input_ids"
TEXT_BYTES = "text_bytes"

CORPUS = [
    "A red bus drives down the busy street.",
    "Two cats sleep on a warm windowsill.",
    "The café serves crème brûlée and espresso.",
    "A dog runs after a red ball in the park!",
    "Children are playing football near the river.",
    "An old man reads the newspaper on a bench.",
] * 20


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(CORPUS, vocab_size=300)


def test_special_tokens_have_fixed_ids(tokenizer: Tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]


def test_round_trip_is_normalized_text(tokenizer: Tokenizer):
    encoding = tokenizer.encode("The CAFÉ serves crème brûlée")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert "[UNK]" not in encoding.tokens
    assert tokenizer.decode(encoding.ids) == "the cafe serves creme brulee"


def test_unseen_characters_become_unk(tokenizer: Tokenizer):
    assert tokenizer.encode("zebra 🦓").tokens.count("[UNK]") >= 1


def test_training_is_deterministic():
    # The plain Hugging Face trainer differs between runs (hash-map order); ten runs must agree.
    specs = {train_tokenizer(CORPUS, vocab_size=120).to_str() for _ in range(10)}
    assert len(specs) == 1


def test_continuation_tokens_are_not_matched_in_raw_text(tokenizer: Tokenizer):
    assert tokenizer.get_added_tokens_decoder().keys() == {0, 1, 2, 3}
    assert "##e" not in tokenizer.encode("##e").tokens


def test_padding_and_mask_are_exact(tokenizer: Tokenizer):
    pre = TextPreprocessor(tokenizer, max_length=12)
    content = tokenizer.encode("a red bus").ids  # [CLS] ... [SEP]
    ids, mask = pre.decode(b"a red bus")
    assert ids.dtype == np.int32 and mask.dtype == np.int8
    assert ids.tolist() == content + [0] * (12 - len(content))
    assert mask.tolist() == [1] * len(content) + [0] * (12 - len(content))


def test_truncation_keeps_cls_and_sep(tokenizer: Tokenizer):
    text = " ".join(CORPUS[:4])
    full = tokenizer.encode(text).ids
    ids, mask = TextPreprocessor(tokenizer, max_length=8).decode(text.encode())
    assert len(full) > 8
    assert ids.tolist() == [2, *full[1:7], 3]
    assert mask.tolist() == [1] * 8


def test_empty_text_is_cls_sep(tokenizer: Tokenizer):
    ids, mask = TextPreprocessor(tokenizer, max_length=4).decode(b"")
    assert ids.tolist() == [2, 3, 0, 0] and mask.tolist() == [1, 1, 0, 0]


def test_same_input_same_ids(tokenizer: Tokenizer):
    pre = TextPreprocessor(tokenizer, max_length=16)
    raw = np.array([t.encode() for t in CORPUS[:6]], dtype=object)
    first = pre({TEXT_BYTES: raw.copy()})[INPUT_IDS]
    second = TextPreprocessor(tokenizer.to_str(), max_length=16)({TEXT_BYTES: raw.copy()})[INPUT_IDS]
    np.testing.assert_array_equal(first, second)


def test_shared_tokenizer_is_not_mutated(tokenizer: Tokenizer):
    TextPreprocessor(tokenizer, max_length=8)
    assert tokenizer.padding is None and tokenizer.truncation is None
    assert len(tokenizer.encode("a red bus").ids) == 5


def test_invalid_utf8_is_bad_text_encoding(tokenizer: Tokenizer):
    with pytest.raises(SampleError) as info:
        TextPreprocessor(tokenizer).decode(b"caf\xe9")  # Latin-1, not UTF-8
    assert info.value.reason is Reason.BAD_TEXT_ENCODING and "0xe9" in info.value.detail


def test_batch_rejects_bad_rows_and_keeps_good_ones(tokenizer: Tokenizer):
    raw = np.array([b"a red bus", b"\xff\xfe\x00", None, "Caf\u00e9".encode(), b""], dtype=object)
    out = TextPreprocessor(tokenizer, max_length=6)({TEXT_BYTES: raw})
    assert out[INPUT_IDS].shape == (5, 6) and out[INPUT_IDS].dtype == np.int32
    assert out[ATTENTION_MASK].shape == (5, 6) and out[ATTENTION_MASK].dtype == np.int8
    assert list(out[REJECT]) == ["", Reason.BAD_TEXT_ENCODING.value, "", "", ""]
    assert out[REJECT_DETAIL][1] and not out[REJECT_DETAIL][0]
    assert list(out[HAS_TEXT]) == [True, False, False, True, True]
    assert not out[INPUT_IDS][1:3].any() and not out[ATTENTION_MASK][1:3].any()
    assert out[INPUT_IDS][0].tolist() == [*tokenizer.encode("a red bus").ids, 0]
    assert out[INPUT_IDS][4].tolist() == [2, 3, 0, 0, 0, 0]


def test_load_from_path_directory_and_json_string(tmp_path, tokenizer: Tokenizer):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    expected = tokenizer.encode("two cats").ids
    for source in (str(path), path, str(tmp_path), tokenizer.to_str()):
        assert load_tokenizer(source).encode("two cats").ids == expected
    ids, _ = TextPreprocessor(str(path), max_length=8).decode(b"two cats")
    assert ids.tolist()[: len(expected)] == expected


def test_load_missing_path_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tokenizer(str(missing))


def test_load_invalid_file_and_string_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(ValueError, match=r"broken\.json"):
        load_tokenizer(str(bad))
    with pytest.raises(ValueError, match="invalid tokenizer JSON"):
        load_tokenizer('{"version": "1.0", "truncated')

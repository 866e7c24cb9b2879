"""The batch contract of mm_ray.columns, checked the same way for all three preprocessors."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mm_ray.columns import KEY, LABEL, REJECT, REJECT_DETAIL
from mm_ray.modalities.audio_decode import AudioPreprocessor
from mm_ray.modalities.image_decode import ImagePreprocessor
from mm_ray.modalities.text_decode import TextPreprocessor
from mm_ray.preprocess.tokenizer import train_tokenizer
from mm_ray.quarantine import Reason

ATTENTION_MASK = "attention_mask"
AUDIO = "audio"
AUDIO_BYTES = "audio_bytes"
HAS_AUDIO = "has_audio"
HAS_IMAGE = "has_image"
HAS_TEXT = "has_text"
IMAGE = "image"
IMAGE_BYTES = "image_bytes"
INPUT_IDS = "input_ids"
TEXT_BYTES = "text_bytes"


@dataclasses.dataclass
class Case:
    build: Callable[[], Callable[[dict], dict]]
    raw_column: str
    presence: str
    outputs: dict[str, tuple[np.dtype, tuple[int, ...]]]  # column -> (dtype, per-row shape)
    good: bytes
    bad: bytes
    bad_reason: Reason


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def _flac() -> bytes:
    buf = io.BytesIO()
    t = np.arange(22050) / 22050
    sf.write(buf, (0.4 * np.sin(2 * np.pi * 660 * t)).astype(np.float32), 22050, format="FLAC")
    return buf.getvalue()


CASES = {
    "image": Case(
        build=lambda: ImagePreprocessor(size=16),
        raw_column=IMAGE_BYTES,
        presence=HAS_IMAGE,
        outputs={IMAGE: (np.dtype(np.uint8), (3, 16, 16))},
        good=_png(),
        bad=b"\x89PNG\r\n\x1a\n broken",
        bad_reason=Reason.CORRUPT_IMAGE,
    ),
    "text": Case(
        build=lambda: TextPreprocessor(
            train_tokenizer(["green grass grows"] * 5, vocab_size=60), max_length=6
        ),
        raw_column=TEXT_BYTES,
        presence=HAS_TEXT,
        outputs={INPUT_IDS: (np.dtype(np.int32), (6,)), ATTENTION_MASK: (np.dtype(np.int8), (6,))},
        good=b"green grass",
        bad=b"gr\xc3\x28ss",
        bad_reason=Reason.BAD_TEXT_ENCODING,
    ),
    "audio": Case(
        build=lambda: AudioPreprocessor(n_mels=32),
        raw_column=AUDIO_BYTES,
        presence=HAS_AUDIO,
        outputs={AUDIO: (np.dtype(np.float32), (32, 101))},
        good=_flac(),
        bad=b"fLaC" + bytes(64),
        bad_reason=Reason.CORRUPT_AUDIO,
    ),
}


@pytest.fixture(params=list(CASES), scope="module")
def case(request) -> Case:
    return CASES[request.param]


@pytest.fixture(scope="module")
def preprocessor(case: Case):
    return case.build()


def _batch(case: Case, members: list, **extra: np.ndarray) -> dict[str, np.ndarray]:
    n = len(members)
    return {
        KEY: np.array([f"k{i}" for i in range(n)], dtype=object),
        LABEL: np.arange(n, dtype=np.int64),
        case.raw_column: np.array(members, dtype=object),
        **extra,
    }


def test_outputs_replace_the_raw_column(case: Case, preprocessor):
    out = preprocessor(_batch(case, [case.good, None, case.bad]))
    assert case.raw_column not in out
    assert set(out) == {KEY, LABEL, case.presence, REJECT, REJECT_DETAIL, *case.outputs}
    for column, (dtype, shape) in case.outputs.items():
        assert out[column].dtype == dtype and out[column].shape == (3, *shape)
        assert out[column][0].any() and not out[column][1:].any()
    assert out[case.presence].dtype == np.bool_ and out[case.presence].tolist() == [True, False, False]
    assert out[REJECT].tolist() == ["", "", case.bad_reason.value]
    assert out[REJECT_DETAIL][2] and out[REJECT_DETAIL][:2].tolist() == ["", ""]
    assert out[KEY].tolist() == ["k0", "k1", "k2"] and out[LABEL].tolist() == [0, 1, 2]


def test_earlier_rejects_are_kept_and_not_decoded(case: Case, preprocessor):
    # A fixed-width string array, as an earlier stage or Arrow may hand over: must not truncate.
    reject = np.array(["", Reason.BAD_JSON.value, "", Reason.MISSING_LABEL.value])
    detail = np.array(["", "json: line 1", "", "no .cls"])
    members = [case.good, case.good, case.bad, case.bad]
    out = preprocessor(_batch(case, members, **{REJECT: reject, REJECT_DETAIL: detail}))
    assert out[REJECT].tolist() == ["", "bad_json", case.bad_reason.value, "missing_label"]
    assert out[REJECT_DETAIL][[0, 1, 3]].tolist() == ["", "json: line 1", "no .cls"]
    assert out[case.presence].tolist() == [True, False, False, False]
    for column in case.outputs:
        # Row 1 holds a decodable member, yet stays zero: rejected rows are skipped, not decoded.
        assert out[column][0].any() and not out[column][1:].any()


def test_read_only_reject_columns_are_not_written_in_place(case: Case, preprocessor):
    reject = np.array(["", ""], dtype=object)
    reject.flags.writeable = False
    out = preprocessor(_batch(case, [case.bad, case.good], **{REJECT: reject}))
    assert out[REJECT].tolist() == [case.bad_reason.value, ""]
    assert out[REJECT_DETAIL][0] and out[REJECT_DETAIL][1] == ""
    assert reject.tolist() == ["", ""]


def test_empty_batch(case: Case, preprocessor):
    out = preprocessor(_batch(case, []))
    for column, (dtype, shape) in case.outputs.items():
        assert out[column].dtype == dtype and out[column].shape == (0, *shape)
    assert out[case.presence].shape == (0,) and out[REJECT].shape == (0,)

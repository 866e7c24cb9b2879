"""Member -> modality mapping and the quarantine rules of ``assemble`` (no decoding happens here)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mm_ray import columns as C
from mm_ray.data.members import IGNORED_MEMBER, MemberMap, assemble
from mm_ray.data.raw import RawSample
from mm_ray.quarantine import Reason

RAW_COLUMNS = {
    C.KEY,
    C.SHARD,
    "image_bytes",
    "text_bytes",
    "audio_bytes",
    C.LABEL,
    "has_image",
    "has_text",
    "has_audio",
}
JPEG = b"\xff\xd8\xff\xe0 not decoded here"


def run(members: dict[str, bytes], member_map: MemberMap | None = None):
    return assemble(RawSample("s.tar", "k", members), member_map or MemberMap())


def reasons(records) -> list[Reason]:
    return [r.reason for r in records]


def test_full_sample_gives_exactly_the_raw_columns():
    row, records = run({"jpg": JPEG, "txt": b"a cat", "flac": b"fLaC...", "cls": b" 7\n"})
    assert records == [] and set(row) == RAW_COLUMNS
    assert row == {
        C.KEY: "k",
        C.SHARD: "s.tar",
        "image_bytes": JPEG,
        "text_bytes": b"a cat",
        "audio_bytes": b"fLaC...",
        C.LABEL: 7,
        "has_image": True,
        "has_text": True,
        "has_audio": True,
    }


def test_missing_modalities_are_none_with_presence_false_and_bytes_are_not_validated():
    row, _ = run({"txt": b"\xff\xfe not utf-8", "cls": b"0"})
    assert row["text_bytes"] == b"\xff\xfe not utf-8"  # the text preprocessor judges UTF-8, not us
    assert row["image_bytes"] is None and row["audio_bytes"] is None
    assert (row["has_image"], row["has_text"], row["has_audio"]) == (False, True, False)


def test_extension_full_match_beats_last_part_match_then_tuple_order_decides():
    assert run({"seg.png": b"mask", "cls": b"1"})[0]["image_bytes"] == b"mask"  # last dotted part
    assert run({"seg.png": b"mask", "png": b"photo", "cls": b"1"})[0]["image_bytes"] == b"photo"
    assert run({"png": b"png", "jpg": b"jpg", "cls": b"1"})[0]["image_bytes"] == b"jpg"
    assert run({"mp3": b"mp3", "wav": b"wav", "cls": b"1"})[0]["audio_bytes"] == b"wav"


def test_unknown_extension_is_a_member_level_note_and_the_sample_is_kept():
    row, records = run({"jpg": JPEG, "cls": b"1", "npy": b"?", "": b"no extension"})
    assert row is not None
    assert [(r.key, r.reason) for r in records] == [("k", Reason.UNKNOWN_EXTENSION)] * 2
    assert not any(r.is_sample for r in records)
    assert "k.npy" in records[0].detail


def test_no_mapped_member_at_all():
    row, records = run({"npy": b"?", "bin": b"?"})
    assert row is None and reasons(records)[-1] == Reason.NO_KNOWN_MEMBERS
    assert sum(r.is_sample for r in records) == 1


def test_a_label_alone_is_not_a_sample():
    row, records = run({"cls": b"3"})
    assert row is None and reasons(records) == [Reason.NO_KNOWN_MEMBERS]


@pytest.mark.parametrize("label", [b"cat", b"-1", b"1.5", b"", b"1_000", b"\xff"])
def test_bad_label_member(label: bytes):
    row, records = run({"jpg": JPEG, "cls": label})
    assert row is None and reasons(records) == [Reason.BAD_LABEL]


def test_label_from_json_when_there_is_no_label_member():
    assert run({"jpg": JPEG, "json": b'{"label": 4}'})[0][C.LABEL] == 4
    assert run({"jpg": JPEG, "json": b'{"label": " 5 "}'})[0][C.LABEL] == 5
    assert run({"jpg": JPEG, "cls": b"1", "json": b'{"label": 4}'})[0][C.LABEL] == 1  # the member wins
    for bad in (b'{"label": true}', b'{"label": 2.5}', b'{"label": "x"}', b'{"label": -2}'):
        row, records = run({"jpg": JPEG, "json": bad})
        assert row is None and reasons(records) == [Reason.BAD_LABEL], bad


def test_missing_label_is_quarantined_only_when_required():
    row, records = run({"jpg": JPEG, "json": b'{"caption": "x"}'})
    assert row is None and reasons(records) == [Reason.MISSING_LABEL]
    row, records = run({"jpg": JPEG}, MemberMap(label_required=False))
    assert records == [] and row[C.LABEL] == -1


def test_text_from_txt_member_else_from_json_field():
    members = MemberMap(label_required=False)
    assert run({"txt": b"member", "json": b'{"caption": "field"}'}, members)[0]["text_bytes"] == b"member"
    assert (
        run({"jpg": JPEG, "json": '{"caption": "café"}'.encode()}, members)[0]["text_bytes"]
        == "café".encode()
    )
    other_field = MemberMap(label_required=False, json_fields={"text": "alt"})
    assert run({"jpg": JPEG, "json": b'{"alt": "a", "caption": "c"}'}, other_field)[0]["text_bytes"] == b"a"
    row, _ = run({"jpg": JPEG, "json": b'{"caption": ["not", "a", "string"]}'}, members)
    assert row["text_bytes"] is None and not row["has_text"]
    # A lone surrogate escape is passed on as bytes the text preprocessor will reject, not an error here.
    row, _ = run({"jpg": JPEG, "json": b'{"caption": "\\ud800"}'}, members)
    with pytest.raises(UnicodeDecodeError):
        row["text_bytes"].decode("utf-8")


def test_required_modality_missing():
    members = MemberMap(required=("image", "audio"))
    row, records = run({"jpg": JPEG, "txt": b"t", "cls": b"1"}, members)
    assert row is None and reasons(records) == [Reason.MISSING_REQUIRED_MODALITY]
    assert "audio" in records[0].detail
    assert run({"jpg": JPEG, "ogg": b"o", "cls": b"1"}, members)[0] is not None


@pytest.mark.parametrize("bad_json", [b"{not json", b'["a", "list"]', b"\xff\xfe\x00garbage", b"[" * 100_000])
def test_bad_json_quarantines_only_when_it_was_needed(bad_json: bytes):
    # Needed for the label (no .cls, label required) -> BAD_JSON.
    row, records = run({"jpg": JPEG, "json": bad_json})
    assert row is None and reasons(records) == [Reason.BAD_JSON]
    # Needed for required text (no .txt) -> BAD_JSON.
    row, records = run({"jpg": JPEG, "cls": b"1", "json": bad_json}, MemberMap(required=("text",)))
    assert row is None and reasons(records) == [Reason.BAD_JSON]
    # The only content besides a label -> BAD_JSON rather than NO_KNOWN_MEMBERS.
    row, records = run({"cls": b"1", "json": bad_json})
    assert row is None and reasons(records) == [Reason.BAD_JSON]
    # Not needed (label and text come from members; img2dataset metadata): kept, with a member note.
    row, records = run({"jpg": JPEG, "txt": b"t", "cls": b"1", "json": bad_json})
    assert row is not None and row["text_bytes"] == b"t"
    assert [(r.reason, r.is_sample) for r in records] == [(IGNORED_MEMBER, False)] and "k.json" in records[
        0
    ].detail
    # Text not required: the sample is kept without text, as if the JSON had no caption.
    row, records = run({"jpg": JPEG, "cls": b"1", "json": bad_json})
    assert row is not None and not row["has_text"] and reasons(records) == [IGNORED_MEMBER]


def test_member_map_normalises_and_validates():
    as_yaml = {"image": ["JPG", ".png"], "text": "txt", "audio": ["wav"]}  # as YAML may give them
    members = MemberMap(extensions=as_yaml, required=["Image"])
    assert members.extensions == (("image", ("jpg", "png")), ("text", ("txt",)), ("audio", ("wav",)))
    assert members.required == ("image",) and members.modalities == ("image", "text", "audio")
    again = MemberMap(extensions=(("image", ("jpg", "png")), ("text", ("txt",)), ("audio", ("wav",))))
    assert hash(dataclasses.replace(members, required=())) == hash(again)
    assert run({"jpg": JPEG, "cls": b"1"}, members)[0]["has_image"]
    with pytest.raises(ValueError, match="required modalities"):
        MemberMap(required=("label",))
    with pytest.raises(ValueError, match="'json' is mapped to both 'text' and 'json'"):
        MemberMap(extensions={"image": ("jpg",), "text": ("txt", "json")})


def test_a_map_reads_exactly_its_modalities_and_their_columns():
    members = MemberMap(
        extensions={"image": ("jpg",), "features": ("npy",)}, json_fields={}, label_required=False
    )
    row, records = run({"jpg": JPEG, "npy": b"\x93NUMPY...", "txt": b"ignored"}, members)
    assert set(row) == {C.KEY, C.SHARD, C.LABEL, "image_bytes", "has_image", "features_bytes", "has_features"}
    assert row["features_bytes"] == b"\x93NUMPY..." and [r.reason for r in records] == [
        Reason.UNKNOWN_EXTENSION
    ]
    row, records = run({"txt": b"only text", "cls": b"1"}, members)
    assert row is None and records[-1].detail == "no image, features content"


def test_img2dataset_json_fields_are_ignored_without_notes():
    meta = {"caption": "c", "url": "https://example.com/a.jpg", "key": "000000000", "status": "success"}
    row, records = run(
        {"jpg": JPEG, "txt": b"t", "json": json.dumps(meta).encode()}, MemberMap(label_required=False)
    )
    assert records == [] and row["text_bytes"] == b"t" and row[C.LABEL] == -1

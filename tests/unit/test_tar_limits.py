"""Hostile members: oversized members and samples, unmapped members, names that are not UTF-8.

Each case becomes a quarantine record (or, for unmapped members, a member-level note) while its neighbours
come out unchanged; oversized and unmapped bytes are never held in memory (peak checked with tracemalloc).
"""

from __future__ import annotations

import io
import tarfile
import tracemalloc

import pyarrow as pa
import pytest

from mm_ray.data.members import MemberMap, assemble
from mm_ray.data.raw import RawSample
from mm_ray.data.tar_stream import iter_samples
from mm_ray.quarantine import QuarantineRecord, Reason

MB = 1 << 20


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced as read: a huge member that never exists in memory as a whole."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = b"\0" * n
        self.left -= n
        return n


def _tar(members: list[tuple[str, int | bytes]], *, fmt: int = tarfile.GNU_FORMAT) -> io.BytesIO:
    """A tar of (name, bytes or a size of zeros); names may hold surrogate-escaped raw bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            if isinstance(body, int):
                info.size = body
                tar.addfile(info, io.BufferedReader(_Zeros(body)))
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    out.seek(0)
    return out


def _items(stream, members: MemberMap | None = None) -> tuple[dict[str, RawSample], list[QuarantineRecord]]:
    samples, records = {}, []
    for item in iter_samples(stream, "s.tar", members=members):
        if isinstance(item, RawSample):
            samples[item.key] = item
        else:
            records.append(item)
    return samples, records


def _peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()


def test_a_member_over_the_limit_quarantines_its_sample_without_being_read() -> None:
    big = 40 * MB
    stream = _tar(
        [("a.txt", b"first"), ("a.cls", b"0"), ("b.txt", big), ("b.cls", b"1"), ("c.txt", b"third")]
    )
    limits = MemberMap(max_member_bytes=1 * MB)
    result = {}
    peak = _peak_mb(lambda: result.update(zip(("samples", "records"), _items(stream, limits), strict=True)))
    assert sorted(result["samples"]) == ["a", "c"]
    (record,) = result["records"]
    assert (record.key, record.reason) == ("b", Reason.MEMBER_TOO_LARGE)
    assert "41,943,040 bytes" in record.detail and "data.max_member_bytes=1,048,576" in record.detail
    assert record.is_sample
    assert peak < 8, f"{peak:.1f} MB held while skipping a {big // MB} MB member"


def test_members_adding_up_over_the_sample_limit_quarantine_the_sample() -> None:
    stream = _tar([("a.txt", 600_000), ("a.jpg", 600_000), ("a.cls", b"1"), ("b.cls", b"2")])
    samples, records = _items(stream, MemberMap(max_member_bytes=MB, max_sample_bytes=MB))
    assert list(samples) == ["b"]
    assert [(r.key, r.reason) for r in records] == [("a", Reason.SAMPLE_TOO_LARGE)]
    assert "1,200,000 bytes" in records[0].detail


def test_unmapped_members_are_noted_but_never_read() -> None:
    stream = _tar([("a.txt", b"caption"), ("a.cls", b"3"), ("a.bin", 40 * MB)])
    members = MemberMap()
    result: list = []
    peak = _peak_mb(lambda: result.extend(_items(stream, members)))
    samples, records = result
    assert records == [] and peak < 8
    row, notes = assemble(samples["a"], members)
    assert row is not None and row["label"] == 3
    assert [(n.reason, n.is_sample) for n in notes] == [(Reason.UNKNOWN_EXTENSION, False)]


@pytest.mark.parametrize("raw", [b"\xff", b"caf\xe9"], ids=["byte-0xff", "latin-1"])
def test_a_name_that_is_not_utf8_quarantines_its_sample_under_an_escaped_key(raw: bytes) -> None:
    bad = raw.decode("utf-8", "surrogateescape")
    stream = _tar(
        [("a.txt", b"ok"), ("a.cls", b"0"), (f"{bad}.txt", b"x"), (f"{bad}.cls", b"1"), ("c.cls", b"2")]
    )
    samples, records = _items(stream)
    assert sorted(samples) == ["a", "c"]
    (record,) = records
    assert record.reason == Reason.BAD_MEMBER_NAME
    escaped = raw.decode("utf-8", "backslashreplace")
    assert record.key == escaped and "\\x" in record.key
    # The record can go where strings go (Arrow columns, the JSONL log) without an encoding error.
    pa.array([record.key, record.detail])
    record.key.encode("utf-8")


def test_links_and_devices_are_noted_not_dropped_silently() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        link = tarfile.TarInfo("a.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        dev = tarfile.TarInfo("b.wav")
        dev.type = tarfile.CHRTYPE
        tar.addfile(dev)
        body = tarfile.TarInfo("c.cls")
        body.size = 1
        tar.addfile(body, io.BytesIO(b"1"))
    out.seek(0)
    samples, records = _items(out)
    assert list(samples) == ["c"]
    assert [(r.key, r.reason, r.is_sample) for r in records] == [
        ("a", Reason.IGNORED_MEMBER, False),
        ("b", Reason.IGNORED_MEMBER, False),
    ]
    assert "link entry 'a.txt'" in records[0].detail and "device entry 'b.wav'" in records[1].detail


def test_the_ledger_counts_distinct_records_of_one_sample_and_ignores_repeats() -> None:
    from mm_ray.data.ledger import QuarantineLedger

    ledger = QuarantineLedger()
    notes = [
        QuarantineRecord("s.tar", "k", Reason.UNKNOWN_EXTENSION, f"member 'k.x{i}'").to_json()
        for i in range(5000)
    ]
    ledger.add(notes)
    ledger.add(notes[:10])  # a retried read task sends some again
    assert ledger.summary()["members_ignored"] == {"unknown_extension": 5000}


def test_a_caption_over_the_limit_is_rejected_before_tokenizing() -> None:
    import numpy as np

    from mm_ray import columns as C
    from mm_ray.modalities.text_decode import TextPreprocessor
    from mm_ray.preprocess.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["a red bus", "a quiet river"], vocab_size=100)
    pre = TextPreprocessor(tokenizer, max_length=8, max_caption_bytes=100)
    out = pre({"text_bytes": np.array([b"a red bus", b"a" * 101], dtype=object)})
    assert list(out[C.REJECT]) == ["", Reason.CAPTION_TOO_LONG.value]
    assert "101 bytes, over text.max_caption_bytes=100" in out[C.REJECT_DETAIL][1]


def test_a_sample_read_again_with_another_decoder_message_counts_once() -> None:
    """A later epoch (or a retried task) quarantines the same sample; the decoder's message may differ."""
    from mm_ray.data.ledger import QuarantineLedger

    ledger = QuarantineLedger()
    for address in ("0x7f01", "0x7f02"):
        ledger.add(
            [QuarantineRecord("s.tar", "k", Reason.CORRUPT_IMAGE, f"<BytesIO at {address}>").to_json()]
        )
    assert ledger.summary()["samples_quarantined"] == 1

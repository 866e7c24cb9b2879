"""webdataset's compressed members (``<ext>.gz``): gunzipped and read as ``<ext>``, within the size limits.

A shard whose captions are ``.txt.gz`` used to be quarantined whole as ``no_known_members``. A gzip bomb (a small
member that inflates to 200 MB) must stop at ``data.max_member_bytes`` with its sample quarantined, holding
only about that much memory (peak measured with tracemalloc).
"""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

from shardkit import audio_bytes, image_bytes, write_tar

from mm_ray.data.members import MemberMap, assemble
from mm_ray.data.raw import RawSample
from mm_ray.data.tar_stream import iter_shard
from mm_ray.quarantine import QuarantineRecord, Reason

MB = 1 << 20


def _read(path: Path, members: MemberMap) -> tuple[dict[str, RawSample], list[QuarantineRecord]]:
    samples, records = {}, []
    for item in iter_shard(str(path), members=members):
        if isinstance(item, RawSample):
            samples[item.key] = item
        else:
            records.append(item)
    return samples, records


def _zeros_gzip(size: int) -> bytes:
    """gzip of ``size`` zero bytes: one compressed MiB repeated (concatenated gzip members are one stream, as
    for gzip(1)), so the zeros never exist at once and building a 200 MB bomb takes milliseconds."""
    return gzip.compress(bytes(MB)) * (size // MB)


def test_gzipped_caption_label_and_json_are_read_like_plain_ones(tmp_path: Path) -> None:
    captions = {f"s{i}": f"a caption number {i}" for i in range(3)}
    members = []
    for i, (key, text) in enumerate(captions.items()):
        members += [
            (f"{key}.flac", audio_bytes(i, fmt="FLAC")),
            (f"{key}.txt.gz", gzip.compress(text.encode())),
            (f"{key}.cls.gz", gzip.compress(str(i).encode())),
            (f"{key}.json.gz", gzip.compress(b'{"caption": "unused"}')),
        ]
    path = write_tar(tmp_path / "gz.tar", members)
    mapping = MemberMap()
    samples, records = _read(path, mapping)
    assert records == []
    assert sorted(samples) == sorted(captions)
    for i, (key, text) in enumerate(captions.items()):
        row, notes = assemble(samples[key], mapping)
        assert notes == []
        assert row["text_bytes"].decode() == text
        assert row["label"] == i
        assert row["has_audio"] and not row["has_image"]


def test_a_gzipped_image_decodes_to_the_original_bytes(tmp_path: Path) -> None:
    jpg = image_bytes(3)
    path = write_tar(tmp_path / "img.tar", [("k.jpg.gz", gzip.compress(jpg)), ("k.cls", b"1")])
    samples, _ = _read(path, MemberMap())
    assert samples["k"].members["jpg"] == jpg


def test_a_gzip_bomb_stops_at_the_member_limit_with_little_memory(tmp_path: Path) -> None:
    bomb = _zeros_gzip(200 * MB)
    assert len(bomb) < MB  # what the tar header declares: far under the limit
    path = write_tar(
        tmp_path / "bomb.tar",
        [
            ("a.txt", b"fine"),
            ("a.cls", b"0"),
            ("b.txt.gz", bomb),
            ("b.cls", b"1"),
            ("c.txt", b"ok"),
            ("c.cls", b"2"),
        ],
    )
    limits = MemberMap(max_member_bytes=2 * MB)
    tracemalloc.start()
    try:
        samples, records = _read(path, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(samples) == ["a", "c"]  # the neighbours come out unchanged
    assert [(r.key, r.reason) for r in records] == [("b", Reason.MEMBER_TOO_LARGE)]
    assert "b.txt.gz" in records[0].detail and "decompresses" in records[0].detail
    # The compressed member (< 1 MB) + at most the cap (2 MB) + one chunk: nowhere near 200 MB.
    assert peak < 8 * MB, f"peak {peak / MB:.1f} MB"


def test_the_sample_limit_caps_decompression_too(tmp_path: Path) -> None:
    path = write_tar(
        tmp_path / "s.tar", [("k.wav", bytes(600_000)), ("k.txt.gz", _zeros_gzip(2 * MB)), ("k.cls", b"0")]
    )
    _, records = _read(path, MemberMap(max_member_bytes=4 * MB, max_sample_bytes=MB))
    assert [(r.key, r.reason) for r in records] == [("k", Reason.MEMBER_TOO_LARGE)]


def test_invalid_gzip_quarantines_only_its_sample(tmp_path: Path) -> None:
    good = gzip.compress(b"a fine caption")
    cut = gzip.compress(b"x" * 5000)[:-12]  # trailer and some data missing
    path = write_tar(
        tmp_path / "bad.tar",
        [
            ("a.txt.gz", good),
            ("a.cls", b"0"),
            ("b.txt.gz", b"not gzip at all"),
            ("b.cls", b"1"),
            ("c.txt.gz", cut),
            ("c.cls", b"1"),
        ],
    )
    samples, records = _read(path, MemberMap())
    assert sorted(samples) == ["a"]
    assert samples["a"].members["txt"] == b"a fine caption"
    assert sorted((r.key, r.reason) for r in records) == [
        ("b", Reason.BAD_COMPRESSION),
        ("c", Reason.BAD_COMPRESSION),
    ]


def test_a_gzipped_member_no_role_maps_is_never_read(tmp_path: Path) -> None:
    path = write_tar(
        tmp_path / "u.tar", [("k.txt", b"hi"), ("k.cls", b"0"), ("k.seg.gz", b"garbage, never gunzipped")]
    )
    samples, records = _read(path, MemberMap())
    assert records == []  # not quarantined as bad gzip: its bytes were skipped
    row, notes = assemble(samples["k"], MemberMap())
    assert row is not None and [n.reason for n in notes] == [Reason.UNKNOWN_EXTENSION]

"""Samples out of real tar shards (webdataset, GNU tar, img2dataset layout, gzip), and every bad input."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds
from PIL import Image

from mm_ray import columns as C
from mm_ray.data.members import IGNORED_MEMBER, MemberMap, assemble
from mm_ray.data.raw import RawSample
from mm_ray.data.tar_stream import iter_samples, iter_shard
from mm_ray.quarantine import QuarantineRecord, Reason

SHARD = "shard-000000.tar"


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def audio(seed: int, fmt: str = "WAV") -> bytes:
    wave = np.random.default_rng(seed).uniform(-0.5, 0.5, 800).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, wave, 16000, format=fmt)
    return out.getvalue()


def sample(i: int) -> dict[str, bytes]:
    """One multimodal sample: members keyed by extension."""
    return {"jpg": jpeg(i), "txt": f"caption {i}".encode(), "wav": audio(i), "cls": str(i % 3).encode()}


class ForwardOnly:
    """A stream that can only be read forward, like an HTTP body: proves the reader never seeks."""

    def __init__(self, data: bytes):
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(size)


def read(data: bytes, shard: str = SHARD) -> tuple[list[RawSample], list[QuarantineRecord]]:
    items = list(iter_samples(ForwardOnly(data), shard))
    return [s for s in items if isinstance(s, RawSample)], [
        r for r in items if isinstance(r, QuarantineRecord)
    ]


def tar_bytes(members: list[tuple[str, bytes]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    """A tar with exactly these members, in this order (Python's tarfile writer)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def wds_tar(samples: dict[str, dict[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with wds.TarWriter(out) as writer:
        for key, members in samples.items():
            writer.write({"__key__": key, **members})
    return out.getvalue()


def members_of(samples: list[RawSample]) -> dict[str, dict[str, bytes]]:
    return {s.key: s.members for s in samples}


# --- the three ways shards get written ---------------------------------------------------------


def test_webdataset_shard_writer_round_trip(tmp_path: Path):
    truth = {f"{i:06d}": sample(i) for i in range(6)}
    with wds.ShardWriter(str(tmp_path / "shard-%06d.tar"), maxcount=4) as writer:
        for key, members in truth.items():
            writer.write({"__key__": key, **members})
    got = {}
    for path in sorted(tmp_path.glob("shard-*.tar")):
        items = list(iter_shard(str(path)))
        assert all(isinstance(i, RawSample) and i.shard == str(path) for i in items)
        got |= members_of(items)
    assert got == truth
    rows = [assemble(RawSample(SHARD, k, m), MemberMap())[0] for k, m in got.items()]
    assert [r[C.LABEL] for r in rows] == [i % 3 for i in range(6)]
    assert all(r["has_image"] and r["has_text"] and r["has_audio"] for r in rows)


def write_folder(root: Path, samples: dict[str, dict[str, bytes]]) -> None:
    for key, members in samples.items():
        for ext, data in members.items():
            path = root / f"{key}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def test_gnu_tar_from_a_folder_with_dot_slash_prefix_and_directory_entries(tmp_path: Path):
    truth = {"a/000": sample(0), "a/001": sample(1), "b/000": {"png": jpeg(2), "flac": audio(2, "FLAC")}}
    write_folder(tmp_path / "src", truth)
    shard = tmp_path / "x.tar"
    subprocess.run(["tar", "-C", str(tmp_path / "src"), "--sort=name", "-cf", str(shard), "."], check=True)
    listing = subprocess.run(["tar", "-tf", str(shard)], check=True, capture_output=True, text=True).stdout
    assert "./\n" in listing and "./a/000.jpg" in listing  # really "./" prefixed, with directory entries
    samples, records = read(shard.read_bytes())
    assert records == []
    assert members_of(samples) == truth  # keys keep their directory, lose the "./"


def test_gnu_tar_gz_with_plain_member_names(tmp_path: Path):
    truth = {f"{i:03d}": sample(i) for i in range(4)}
    write_folder(tmp_path / "src", truth)
    files = sorted(p.name for p in (tmp_path / "src").iterdir())
    shard = tmp_path / "x.tar.gz"
    subprocess.run(["tar", "-C", str(tmp_path / "src"), "-czf", str(shard), *files], check=True)
    assert shard.read_bytes()[:2] == b"\x1f\x8b"
    samples, records = read(shard.read_bytes())
    assert records == []
    assert members_of(samples) == truth


def test_img2dataset_layout(tmp_path: Path):
    """``000000000.jpg/.txt/.json`` with caption/url/key/status, no label: captions come from .txt."""
    truth = {}
    for i in range(3):
        key = f"{i:09d}"
        meta = {
            "caption": f"json caption {i}",
            "url": f"https://example.com/{i}.jpg",
            "key": key,
            "status": "success",
        }
        truth[key] = {"jpg": jpeg(i), "txt": f"a photo {i}".encode(), "json": json.dumps(meta).encode()}
    write_folder(tmp_path / "src", truth)
    files = sorted(p.name for p in (tmp_path / "src").iterdir())
    subprocess.run(
        ["tar", "-C", str(tmp_path / "src"), "-cf", str(tmp_path / "00000.tar"), *files], check=True
    )
    samples, records = read((tmp_path / "00000.tar").read_bytes())
    assert records == [] and members_of(samples) == truth
    members = MemberMap(label_required=False, required=("image",))
    for s in samples:
        row, notes = assemble(s, members)
        assert notes == []
        assert row["text_bytes"] == truth[s.key]["txt"] and row["image_bytes"] == truth[s.key]["jpg"]
        assert row[C.LABEL] == -1 and not row["has_audio"]
    # Without the .txt member the JSON caption is the text.
    row, _ = assemble(RawSample(SHARD, "k", {"jpg": b"x", "json": truth["000000001"]["json"]}), members)
    assert row["text_bytes"] == b"json caption 1"


def test_webdataset_tar_gz():
    truth = {f"k{i}": sample(i) for i in range(3)}
    samples, records = read(gzip.compress(wds_tar(truth)))
    assert records == [] and members_of(samples) == truth


# --- naming rules --------------------------------------------------------------------------------


def test_key_is_path_up_to_first_dot_of_base_name_and_extension_is_lower_cased():
    data = tar_bytes(
        [
            ("./dir.v2/abc.seg.PNG", b"1"),
            ("./dir.v2/abc.JPG", b"2"),
            ("noext", b"3"),
            ("dir/.DS_Store", b"4"),
            ("dir/._abc.jpg", b"5"),
        ]
    )
    samples, records = read(data)
    assert records == []
    assert members_of(samples) == {"dir.v2/abc": {"seg.png": b"1", "jpg": b"2"}, "noext": {"": b"3"}}


def test_links_and_directories_are_skipped_and_links_noted():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, kind in (("d", tarfile.DIRTYPE), ("a.lnk", tarfile.SYMTYPE), ("a.hard", tarfile.LNKTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "a.jpg"
            tar.addfile(info)
        info = tarfile.TarInfo("a.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"jpg"))
    samples, records = read(out.getvalue())
    assert members_of(samples) == {"a": {"jpg": b"jpg"}}
    # Directories are structure; links are content that is not read, so each gets a member-level note.
    assert [(r.key, r.reason, r.is_sample) for r in records] == [
        ("a", Reason.IGNORED_MEMBER, False),
        ("a", Reason.IGNORED_MEMBER, False),
    ]


def test_pickles_are_returned_as_bytes_never_loaded(tmp_path: Path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    payload = pickle.dumps(Exploit())
    samples, _ = read(tar_bytes([("a.pyd", payload), ("a.pickle", payload)]))
    assert samples[0].members == {"pyd": payload, "pickle": payload}
    assert not marker.exists()


def test_stream_is_left_open_for_the_caller():
    stream = io.BytesIO(wds_tar({"a": {"txt": b"x"}}))
    list(iter_samples(stream, SHARD))
    assert not stream.closed


# --- bad input: every case yields the good samples and records the bad ones ------------------------

TRUTH = {f"s{i}": {"cls": str(i).encode(), "jpg": jpeg(i), "txt": f"caption {i}".encode()} for i in range(4)}


def layout(data: bytes) -> dict[str, tuple[int, int, int]]:
    """member name -> (header offset, data offset, data end), read back with tarfile."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (m.offset, m.offset_data, m.offset_data + m.size) for m in tar.getmembers()}


def assert_cut(data: bytes, cut: int, complete: list[str], in_progress: str | None) -> None:
    samples, records = read(data[:cut])
    assert [s.key for s in samples] == complete
    assert members_of(samples) == {k: TRUTH[k] for k in complete}
    expected = [(in_progress, Reason.TRUNCATED_SAMPLE)] if in_progress else []
    assert [(r.key, r.reason) for r in records] == [*expected, ("", Reason.TRUNCATED_SHARD)]


def gnu_tar(samples: dict[str, dict[str, bytes]]) -> bytes:
    return tar_bytes([(f"{k}.{ext}", v) for k, members in samples.items() for ext, v in members.items()])


@pytest.mark.parametrize("write", [gnu_tar, wds_tar], ids=["gnu-headers", "pax-headers"])
def test_truncation_at_real_offsets(write):
    data = write(TRUTH)
    at = layout(data)
    header, start, end = at["s2.jpg"]
    assert_cut(data, header + 100, ["s0", "s1"], "s2")  # inside a header
    assert_cut(data, start + 10, ["s0", "s1"], "s2")  # inside member data
    assert_cut(data, end + 1, ["s0", "s1"], "s2")  # inside the padding after the data
    assert_cut(data, at["s3.cls"][0], ["s0", "s1"], "s2")  # exactly between samples: s2 may have had more
    end_of_members = at["s3.txt"][2] + (-at["s3.txt"][2] % 512)
    assert_cut(data, end_of_members + 100, ["s0", "s1", "s2"], "s3")  # inside the end-of-archive block
    samples, records = read(data[: end_of_members + 512])  # the first zero block is enough
    assert records == [] and members_of(samples) == TRUTH


def test_cut_inside_the_first_header():
    # A valid pax header whose member header is cut: truncated, but no key is known yet.
    assert_cut(wds_tar(TRUTH), 700, [], None)
    # Less than one 512-byte header cannot be told apart from garbage.
    samples, records = read(gnu_tar(TRUTH)[:300])
    assert samples == [] and [r.reason for r in records] == [Reason.UNREADABLE_SHARD]


def test_every_cut_yields_a_prefix_of_the_good_samples_and_never_raises():
    data = wds_tar(TRUTH)
    eof = max(end for _, _, end in layout(data).values())
    eof += -eof % 512  # the end-of-archive block starts at the next 512-byte boundary
    for cut in range(512, len(data), 61):
        samples, records = read(data[:cut])
        keys = [s.key for s in samples]
        assert keys == list(TRUTH)[: len(keys)]
        assert all(s.members == TRUTH[s.key] for s in samples)
        shard_records = [r for r in records if r.reason == Reason.TRUNCATED_SHARD]
        assert len(shard_records) == (1 if cut < eof + 512 else 0), cut


def test_truncated_tar_gz_and_corrupt_gzip():
    data = gzip.compress(wds_tar(TRUTH))
    samples, records = read(data[: len(data) * 2 // 3])
    assert 0 < len(samples) < len(TRUTH) and members_of(samples) == {s.key: TRUTH[s.key] for s in samples}
    assert [r.reason for r in records] == [Reason.TRUNCATED_SAMPLE, Reason.TRUNCATED_SHARD]
    assert records[0].key == list(TRUTH)[len(samples)]
    # A wrong CRC in the gzip trailer (tarfile alone never checks it) shows when the decompressor
    # reaches the trailer, while the last tar record is read: the samples in that record are set aside.
    bad_crc = data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]
    samples, records = read(bad_crc)
    assert len(samples) < len(TRUTH) and members_of(samples) == {s.key: TRUTH[s.key] for s in samples}
    assert records[-1].reason == Reason.TRUNCATED_SHARD and "incorrect data check" in records[-1].detail
    # Cut inside the trailer: every sample is complete, the shard is still reported as cut.
    samples, records = read(data[:-3])
    assert members_of(samples) == TRUTH and [r.reason for r in records] == [Reason.TRUNCATED_SHARD]


def test_noncontiguous_key_keeps_the_first_run_and_sets_aside_the_late_fragment():
    order = [
        ("a.jpg", b"1"),
        ("a.txt", b"2"),
        ("b.jpg", b"3"),
        ("a.cls", b"4"),
        ("a.wav", b"5"),
        ("c.jpg", b"6"),
    ]
    samples, records = read(tar_bytes(order))
    assert members_of(samples) == {"a": {"jpg": b"1", "txt": b"2"}, "b": {"jpg": b"3"}, "c": {"jpg": b"6"}}
    assert [(r.key, r.reason) for r in records] == [("a", Reason.NONCONTIGUOUS_KEY)]
    assert "a.cls" in records[0].detail and "a.wav" in records[0].detail


@pytest.mark.parametrize(
    "data",
    [b"", tar_bytes([]), gzip.compress(tar_bytes([])), tar_bytes([("d/", b"")])],
    ids=["zero-bytes", "no-members", "gzip-no-members", "only-dotfile-or-dir"],
)
def test_empty_shard(data: bytes):
    samples, records = read(data)
    assert samples == [] and [(r.key, r.reason) for r in records] == [("", Reason.EMPTY_SHARD)]


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(0).bytes(5000),
        b"this is a text file, not a tar\n" * 100,
        b"\x1f\x8b\x08" + np.random.default_rng(1).bytes(3000),  # gzip magic, garbage body
        b"\x1f\x8b\x09\x00" + b"\x00" * 600,  # gzip magic, unknown compression method
        jpeg(0),
        b"short",
    ],
    ids=["random", "text", "bad-gzip-body", "bad-gzip-method", "a-jpeg", "short"],
)
def test_not_a_tar_is_unreadable_not_an_exception(data: bytes):
    samples, records = read(data)
    assert samples == []
    assert [(r.shard, r.key, r.reason) for r in records] == [(SHARD, "", Reason.UNREADABLE_SHARD)]
    assert records[0].detail  # the error text, for the quarantine log


def test_garbage_after_good_samples_ends_the_shard_as_truncated():
    good = tar_bytes([("a.jpg", b"1"), ("b.jpg", b"2")])
    eof = max(end for _, _, end in layout(good).values())
    eof += -eof % 512
    samples, records = read(good[:eof] + np.random.default_rng(2).bytes(2048))
    assert members_of(samples) == {"a": {"jpg": b"1"}}
    assert [(r.key, r.reason) for r in records] == [
        ("b", Reason.TRUNCATED_SAMPLE),
        ("", Reason.TRUNCATED_SHARD),
    ]


def test_duplicate_extension_keeps_the_first_and_notes_the_second():
    samples, records = read(
        tar_bytes([("a.jpg", b"first"), ("a.txt", b"t"), ("a.jpg", b"second"), ("b.jpg", b"b")])
    )
    assert members_of(samples) == {"a": {"jpg": b"first", "txt": b"t"}, "b": {"jpg": b"b"}}
    assert [(r.key, r.reason) for r in records] == [("a", IGNORED_MEMBER)]
    assert not records[0].is_sample and "a.jpg" in records[0].detail


def test_concatenated_gzip_members_and_zero_padding_are_read_through():
    data = wds_tar(TRUTH)
    half = len(data) // 2  # like pigz/appended archives: two gzip members, then tape-style zero padding
    samples, records = read(gzip.compress(data[:half]) + gzip.compress(data[half:]) + bytes(700))
    assert records == [] and members_of(samples) == TRUTH

"""Whole-shard compressions: ``.tar.gz``, ``.tar.bz2`` and ``.tar.xz`` give the samples of the plain tar, meet
the same member caps (a bomb is skipped while inflating, never held), and damaged or cut streams become
quarantine records. tarfile's own streaming bz2/xz took 109 s and 192 MB for a 211-byte ``.tar.bz2`` holding
64 MiB of zeros; the peak memory below is the regression check (tracemalloc), not a timer."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import tracemalloc
from collections.abc import Callable

import pytest
from shardkit import good_sample, sample_members, tar_bytes

from mm_ray.data.members import MemberMap
from mm_ray.data.raw import RawSample
from mm_ray.data.tar_stream import iter_samples
from mm_ray.quarantine import QuarantineRecord, Reason

MB = 1 << 20


def _bz2_streams(data: bytes) -> bytes:
    """Two bzip2 streams one after the other, as pbzip2 writes them."""
    half = len(data) // 2
    return bz2.compress(data[:half]) + bz2.compress(data[half:])


COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "bz2-multistream": _bz2_streams,
    "xz": lambda data: lzma.compress(data, format=lzma.FORMAT_XZ),
}


def _streamed(kind: str, members: list[tuple[str, int | bytes]]) -> bytes:
    """A compressed tar of (name, bytes or a size of zeros), compressed as it is written: the zeros never
    exist in memory as a whole."""
    engine = {"gz": lambda: _GzipCompressor(), "bz2": bz2.BZ2Compressor, "xz": lzma.LZMACompressor}[kind]()
    out = io.BytesIO()

    class Sink:
        def write(self, data: bytes) -> int:
            out.write(engine.compress(data))
            return len(data)

    with tarfile.open(fileobj=Sink(), mode="w|") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = body if isinstance(body, int) else len(body)
            tar.addfile(info, _Zeros(body) if isinstance(body, int) else io.BytesIO(body))
    out.write(engine.flush())
    return out.getvalue()


class _GzipCompressor:
    def __init__(self) -> None:
        import zlib

        self._z = zlib.compressobj(9, wbits=31)

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def flush(self) -> bytes:
        return self._z.flush()


class _Zeros:
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return b"\0" * n


def _items(data: bytes, members: MemberMap | None = None) -> list[RawSample | QuarantineRecord]:
    return list(iter_samples(io.BytesIO(data), "s.tar", members=members))


SAMPLES = {f"k{i}": good_sample(i) for i in range(3)}
PLAIN = tar_bytes(sample_members(SAMPLES))


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_every_compression_gives_the_plain_tars_samples(kind: str) -> None:
    items = _items(COMPRESS[kind](PLAIN))
    assert all(isinstance(i, RawSample) for i in items)
    assert {i.key: i.members for i in items} == {i.key: i.members for i in _items(PLAIN)}
    assert set(SAMPLES) == {i.key for i in items}


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_a_compressed_bomb_meets_the_member_cap_and_is_never_held(kind: str) -> None:
    # 24 MiB of zeros in a few kilobytes, over a 1 MiB member cap; a good sample after it.
    data = _streamed(kind, [("bomb.txt", 24 * MB), *sample_members({"after": good_sample(1)})])
    assert len(data) < 64 * 1024
    tracemalloc.start()
    try:
        items = _items(data, MemberMap(max_member_bytes=MB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(type(i).__name__, i.key, getattr(i, "reason", None)) for i in items] == [
        ("QuarantineRecord", "bomb", Reason.MEMBER_TOO_LARGE),
        ("RawSample", "after", None),
    ]
    # The decompressor's own state (xz: its 8 MiB dictionary) and one read, not the member.
    assert peak < 16 * MB, f"{peak / MB:.0f} MiB held while skipping a 24 MiB member"


@pytest.mark.parametrize("kind", ["bz2", "xz"])
def test_an_unmapped_compressed_member_is_skipped_without_holding_it(kind: str) -> None:
    data = _streamed(kind, [("big.bin", 24 * MB), *sample_members({"after": good_sample(1)})])
    tracemalloc.start()
    try:
        items = _items(data, MemberMap())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [i.key for i in items if isinstance(i, RawSample)] == ["big", "after"]
    assert peak < 16 * MB


@pytest.mark.parametrize("kind", ["bz2", "xz"])
def test_a_damaged_or_cut_compressed_shard_is_quarantined_never_raised(kind: str) -> None:
    data = bytearray(COMPRESS[kind](PLAIN))
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the compressed blocks
    items = _items(bytes(data))
    shard_records = [i for i in items if isinstance(i, QuarantineRecord) and i.key == ""]
    assert [r.reason for r in shard_records] in ([Reason.TRUNCATED_SHARD], [Reason.UNREADABLE_SHARD])
    for cut_at in (len(data) // 2, 20):  # a cut inside the first (here: only) block gives no tar at all
        cut = _items(COMPRESS[kind](PLAIN)[:cut_at])
        assert cut[-1].reason == Reason.TRUNCATED_SHARD and "ends early" in cut[-1].detail


def test_a_directory_of_compressed_shards_is_listed_and_read(tmp_path) -> None:
    """A directory spec lists every whole-shard compression the reader knows (bz2 and xz shards in a
    directory were once left out: a directory of them read as "no shards")."""
    from mm_ray.data.sources import expand_shards
    from mm_ray.data.tar_stream import iter_shard

    names = {"a.tar": PLAIN, "b.tar.bz2": bz2.compress(PLAIN), "c.tbz2": bz2.compress(PLAIN)}
    names |= {
        "d.tar.xz": COMPRESS["xz"](PLAIN),
        "e.txz": COMPRESS["xz"](PLAIN),
        "f.tgz": gzip.compress(PLAIN),
    }
    for name, data in names.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "notes.txt.xz").write_bytes(COMPRESS["xz"](b"not a shard"))

    urls = expand_shards(str(tmp_path))
    assert [u.rsplit("/", 1)[-1] for u in urls] == sorted(names)
    for url in urls:
        read = list(iter_shard(url))
        assert [item.key for item in read if isinstance(item, RawSample)] == list(SAMPLES), url
        assert not [item for item in read if isinstance(item, QuarantineRecord)], url

"""Stream webdataset samples out of one tar shard, turning every kind of bad input into a record.

Usage::

    from mm_ray.data.tar_stream import iter_shard

    for item in iter_shard("s3://bucket/train/shard-000007.tar", storage_options=opts):
        if isinstance(item, RawSample):
            ...  # item.members == {"jpg": b"...", "txt": b"...", "cls": b"3"}
        else:
            ...  # a QuarantineRecord: count it and write it to the quarantine log

``iter_samples(stream, shard)`` does the same for an already open binary stream (only ``read``
is used). The tar is read with ``tarfile``'s streaming mode (``r|``: no seeks), one member at a time,
so memory holds one sample, never the shard. A ``.tar.gz``, ``.tar.bz2`` or ``.tar.xz`` (detected from
its bytes) is decompressed here rather than by tarfile, a bounded read at a time: tarfile's streaming
decompression inflates whatever one input block holds at once and re-slices it for every 512-byte read
(a 224-byte ``.tar.bz2`` of zeros took 116 s and 200 MB), and its gzip never checks the CRC, so a flipped
bit would pass silently. Decompressed, every kind meets the same member and sample caps as a plain tar.
Nothing is ever unpickled.

Grouping follows webdataset: a member's key is its path up to the first dot of its base name
(directory prefix kept, a leading ``./`` stripped), its extension the rest, lower-cased;
consecutive members with the same key form one sample. Directories, links, devices and dotfiles
(``.DS_Store``, macOS ``._*`` resource forks) are skipped.

Bad input never raises; it becomes a ``QuarantineRecord``:

* 0-byte shard, or a valid tar with no regular members -> one ``EMPTY_SHARD``.
* not a tar / garbage / bad compressed data -> one ``UNREADABLE_SHARD`` with the error text
  (also when the shard cannot be opened at all, e.g. a brace-expanded name that does not exist,
  and for a stream shorter than one 512-byte header: too short to tell a cut from garbage).
* the stream ends early or breaks mid-way (cut inside a member, a header, the padding, or before
  the end-of-archive blocks; a corrupt header or compressed block) -> the samples finished before
  the cut are yielded, the sample being assembled at the cut is ``TRUNCATED_SAMPLE`` (we cannot
  know whether it was complete), then one ``TRUNCATED_SHARD``. A cut inside the first member's
  header gives only the ``TRUNCATED_SHARD`` (no key is known yet).
  A ``.tar.gz``/``.bz2``/``.xz`` whose check fails (gzip's CRC, bzip2's block CRCs, xz's check)
  counts as broken where the decompressor notices (for gzip usually while the last tar record is
  read); if that is only after the tar has ended, or the stream is cut inside the trailer, the
  samples are all yielded and the shard gets one ``UNREADABLE_SHARD`` (check failed: samples may be
  damaged) or ``TRUNCATED_SHARD`` (cut trailer). A compressed member too large to keep is skipped while
  inflating (``MEMBER_TOO_LARGE``, or never read when its extension maps to nothing): time grows with
  its size, memory does not.
* a key that comes back after other keys -> its first run is the sample; the late fragment is
  ``NONCONTIGUOUS_KEY`` listing the fragment's member names (only a set of seen keys is kept).
* a member compressed as ``<ext>.gz`` (webdataset's convention) is gunzipped and stored under ``<ext>``,
  never inflated past ``data.max_member_bytes`` (nor the sample's remaining ``data.max_sample_bytes``): a
  larger one quarantines its sample as ``MEMBER_TOO_LARGE``, invalid gzip as ``BAD_COMPRESSION``.
* two members with the same extension in one sample -> the first is kept, the second is dropped
  with a member-level record (``members.IGNORED_MEMBER``) naming it.
"""

from __future__ import annotations

import bz2
import lzma
import tarfile
import zlib
from collections.abc import Generator, Iterator
from typing import BinaryIO

from mm_ray.data.compressed import BadCompression, TooLarge, gunzip_member, logical_extension
from mm_ray.data.members import IGNORED_MEMBER, MemberMap
from mm_ray.data.raw import RawSample
from mm_ray.data.sources import DEFAULT_BUFFER_SIZE, OBJECT_STORE_RETRY, Backoff, open_shard
from mm_ray.quarantine import QuarantineRecord, Reason

Item = RawSample | QuarantineRecord
GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
COMPRESSIONS = {"gzip": GZIP_MAGIC, "bzip2": b"BZh", "xz": XZ_MAGIC}
"""Whole-shard compressions (``.tar.gz``, ``.tar.bz2``, ``.tar.xz``), by their magic bytes."""
DECOMPRESSION_ERRORS = (zlib.error, OSError, EOFError, lzma.LZMAError)
"""What a damaged compressed stream raises (bz2 raises ``OSError``)."""


def iter_shard(
    url: str,
    *,
    storage_options: dict | None = None,
    members: MemberMap | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    retry: Backoff = OBJECT_STORE_RETRY,
) -> Iterator[Item]:
    """Open ``url`` (local path or ``s3://``) and yield its samples and records; never raises for bad data.

    ``members``: its size limits apply, and members whose extension it does not map are not read (they
    stay in the sample as empty bytes, so ``assemble`` still counts them). Without it, every member is read,
    under ``MemberMap``'s default limits. ``retry``: how long a lost object-store connection is retried.
    """
    try:
        stream = open_shard(url, storage_options, buffer_size=buffer_size, retry=retry)
    except OSError as e:
        yield QuarantineRecord(url, "", Reason.UNREADABLE_SHARD, str(e))
        return
    with stream:
        yield from iter_samples(stream, url, members=members)


def iter_samples(stream: BinaryIO, shard: str, *, members: MemberMap | None = None) -> Iterator[Item]:
    """Yield ``RawSample``s and ``QuarantineRecord``s from a forward-only binary tar stream."""
    header_errors: list[tarfile.HeaderError] = []
    source = None
    try:
        source = _Source(stream)
        # Not a ``with``: opening is where garbage and empty shards show up; closed below.
        tar = tarfile.open(fileobj=source.data, mode="r|", tarinfo=_watching_tarinfo(header_errors))  # noqa: SIM115
    except Exception as e:  # tarfile raises many types on garbage: ReadError, CompressionError, EOFError, ...
        detail = _describe(e)
        if source is not None and source.decompressed is not None and source.decompressed.cut:
            detail = f"the {source.decompressed.kind} stream ends early, before a whole tar header ({detail})"
        yield QuarantineRecord(shard, "", _open_failure_reason(e, header_errors, source), detail)
        return
    with tar:  # closes tarfile's wrapper only; the caller owns ``stream``
        clean_end = yield from _read_all(tar, _Grouper(shard), header_errors, members)
    problem = source.check_rest() if clean_end else None
    if problem is not None:
        yield QuarantineRecord(shard, "", *problem)


def _read_all(
    tar: tarfile.TarFile, group: _Grouper, header_errors: list, members: MemberMap | None
) -> Generator[Item, None, bool]:
    """Yield the samples and records of an open tar; return whether it ended at its end-of-archive marker."""
    limits = members or MemberMap()
    while True:
        try:
            info = tar.next()
        except Exception as e:
            yield from group.cut(None, _describe(e))
            return False
        if info is None:
            break
        # Streaming mode still appends every header to tar.members; drop them so memory stays flat.
        tar.members.clear()
        if info.issym() or info.islnk() or info.isdev():
            # Never followed or read; noted, so the archive's whole content is accounted for.
            name = _printable(info.name)
            kind = "link" if info.issym() or info.islnk() else "device"
            detail = f"{kind} entry {name!r} skipped: only regular files are read"
            yield QuarantineRecord(group.shard, _split_path(name)[1], IGNORED_MEMBER, detail)
            continue
        parsed = _split_name(info)
        if parsed is None:
            continue
        printable = _printable(parsed[0])
        name, key, ext = _split_path(printable)
        yield from group.switch_to(key)
        if printable != parsed[0]:  # not valid UTF-8: no string column could hold it
            group.reject(Reason.BAD_MEMBER_NAME, f"member name {printable!r} is not valid UTF-8")
        data = None
        # ``x.txt.gz`` plays the role of ``x.txt`` once decompressed (webdataset's convention).
        stored_ext, ext = ext, logical_extension(ext)
        # Skipped members' bytes are never read: tarfile's stream skips over them in small reads.
        if group.late or group.rejected:
            pass  # set aside anyway
        elif members is not None and members.role_of(ext) is None:
            data = b""  # mapped to nothing: counted by ``assemble`` as an unknown extension, never read
        elif info.size > limits.max_member_bytes:
            group.reject(
                Reason.MEMBER_TOO_LARGE,
                f"member {name!r} is {info.size:,} bytes, over data.max_member_bytes={limits.max_member_bytes:,}",
            )
        elif group.sample_bytes + info.size > limits.max_sample_bytes:
            group.reject(
                Reason.SAMPLE_TOO_LARGE,
                f"members up to {name!r} add up to {group.sample_bytes + info.size:,} bytes, over "
                f"data.max_sample_bytes={limits.max_sample_bytes:,}",
            )
        else:
            try:
                data = tar.extractfile(info).read()
            except Exception as e:
                yield from group.cut(name, _describe(e))
                return False
            if stored_ext != ext:
                data = _gunzip(group, name, data, limits)
            if data is not None:
                group.sample_bytes += len(data)
        yield from group.add(name, ext, data)
    # tarfile ends iteration silently on a missing, cut or corrupt header after the first one;
    # only a zero block (the end-of-archive marker) is a clean end.
    last = header_errors[-1] if header_errors else None
    if not isinstance(last, tarfile.EOFHeaderError):
        why = _describe(last) if last else "stream ended"
        yield from group.cut(None, f"no end-of-archive marker ({why})")
        return False
    yield from group.finish()
    return True


def _gunzip(group: _Grouper, name: str, data: bytes, limits: MemberMap) -> bytes | None:
    """A ``.gz`` member decompressed under the member and sample limits, or ``None`` with its sample rejected."""
    cap = min(limits.max_member_bytes, limits.max_sample_bytes - group.sample_bytes)
    try:
        return gunzip_member(data, cap)
    except TooLarge:
        group.reject(
            Reason.MEMBER_TOO_LARGE,
            f"member {name!r} decompresses to more than {cap:,} bytes (data.max_member_bytes="
            f"{limits.max_member_bytes:,}, data.max_sample_bytes={limits.max_sample_bytes:,})",
        )
    except BadCompression as e:
        group.reject(Reason.BAD_COMPRESSION, f"member {name!r}: {e}")
    return None


class _Source:
    """The shard's bytes as tarfile should see them: counted (an empty shard is 0 raw bytes), and decompressed
    by ``_Decompressed`` when they start with a gzip, bzip2 or xz magic. tarfile itself only ever reads a plain
    tar (mode ``r|``): its own streaming decompression is uncapped and slows quadratically (a 224-byte
    ``.tar.bz2`` took 116 s and 200 MB), and its gzip never checks the CRC."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._head = stream.read(len(XZ_MAGIC)) or b""
        self.raw_bytes = len(self._head)
        kind = next((k for k, magic in COMPRESSIONS.items() if self._head.startswith(magic)), None)
        self.decompressed = _Decompressed(self, kind) if kind else None
        self.data = self.decompressed or self

    def read(self, size: int | None = -1) -> bytes:
        """Raw bytes, the peeked ones first."""
        head, self._head = self._head, b""
        if size is not None and 0 <= size <= len(head):
            self._head = head[size:]
            return head[:size]
        rest = self._stream.read() if size is None or size < 0 else self._stream.read(size - len(head))
        rest = rest or b""
        self.raw_bytes += len(rest)
        return head + rest

    def check_rest(self) -> tuple[Reason, str] | None:
        """After a clean tar end, read a compressed stream to its end so its checksums and length get checked."""
        if self.decompressed is None:
            return None
        kind = self.decompressed.kind
        try:
            while self.decompressed.read(1 << 20):
                pass
        except DECOMPRESSION_ERRORS as e:
            return Reason.UNREADABLE_SHARD, f"{kind} check failed, samples may be damaged: {_describe(e)}"
        if not self.decompressed.complete:  # cut inside the trailer: every sample was complete
            return Reason.TRUNCATED_SHARD, f"{kind} stream ends before its trailer (after the tar ended)"
        return None


class _Decompressed:
    """Forward-only reader of a gzip, bzip2 or xz stream that never inflates more than it is asked for, so
    memory holds one read and time grows with the bytes read. Every stream checks its data as it goes (gzip:
    zlib's gzip mode checks each member's CRC-32 and length); concatenated streams (pigz, pbzip2, appended
    archives) are read one after another; a cut reads short instead of raising, so tarfile sees exactly the
    bytes before the cut."""

    def __init__(self, raw: _Source, kind: str):
        self._raw, self.kind = raw, kind
        self._engine = _new_decompressor(kind)
        self._input = b""  # raw bytes the decompressor has not taken yet
        self.cut = False  # the raw stream ended inside a compressed stream

    @property
    def complete(self) -> bool:
        return self._engine.eof and not self._input

    def read(self, size: int | None = -1) -> bytes:
        unlimited = size is None or size < 0
        parts, got = [], 0
        while unlimited or got < size:
            if self._engine.eof:
                if not self._input:
                    self._input = self._raw.read(1 << 16)
                    if not self._input:
                        break
                if not self._input.strip(b"\0"):  # zero padding after the last stream: gzip(1) ignores it too
                    self._input = b""
                    continue
                self._engine = _new_decompressor(self.kind)
            if not self._input and self._engine.needs_input:
                self._input = self._raw.read(1 << 16)
                if not self._input:
                    self.cut = True
                    break  # a short read: tarfile sees the bytes before the cut
            data = self._engine.decompress(self._input, -1 if unlimited else size - got)
            self._input = self._engine.unused_data if self._engine.eof else self._engine.unconsumed
            parts.append(data)
            got += len(data)
        return b"".join(parts)


class _Zlib:
    """zlib's gzip decoder with bz2's and lzma's interface (``needs_input``, ``decompress(data, max_length)``)."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)

    eof = property(lambda self: self._z.eof)
    unused_data = property(lambda self: self._z.unused_data)
    unconsumed = property(lambda self: self._z.unconsumed_tail)
    needs_input = True  # whatever input is left over is handed back in ``unconsumed``

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._z.decompress(data, max(max_length, 0))


class _Buffered:
    """bz2's and lzma's decompressors keep unconsumed input themselves: nothing is handed back."""

    def __init__(self, engine: bz2.BZ2Decompressor | lzma.LZMADecompressor) -> None:
        self._d = engine

    eof = property(lambda self: self._d.eof)
    unused_data = property(lambda self: self._d.unused_data)
    needs_input = property(lambda self: self._d.needs_input)
    unconsumed = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._d.decompress(data, max_length)


def _new_decompressor(kind: str) -> _Zlib | _Buffered:
    if kind == "gzip":
        return _Zlib()
    return _Buffered(bz2.BZ2Decompressor() if kind == "bzip2" else lzma.LZMADecompressor(lzma.FORMAT_XZ))


class _Grouper:
    """Assembles consecutive members into samples and remembers which keys are already closed."""

    def __init__(self, shard: str):
        self.shard = shard
        self.key: str | None = None
        self.members: dict[str, bytes] = {}
        self.names: list[str] = []
        self.late = False  # the current run is a late fragment of a key seen before
        self.rejected: tuple[Reason, str] | None = None  # the current sample is set aside, and why
        self.sample_bytes = 0
        self.seen: set[str] = set()
        self.samples = 0

    def switch_to(self, key: str) -> Iterator[Item]:
        if key == self.key:
            return
        yield from self._close()
        self.key, self.members, self.names = key, {}, []
        self.rejected, self.sample_bytes = None, 0
        self.late = key in self.seen
        self.seen.add(key)

    def reject(self, reason: Reason, detail: str) -> None:
        """Set the current sample aside (the first reason wins); its remaining members are not read."""
        if self.rejected is None:
            self.rejected = (reason, detail)
            self.members = {}

    def add(self, name: str, ext: str, data: bytes | None) -> Iterator[Item]:
        self.names.append(name)
        if self.late or self.rejected:
            return
        if ext in self.members:
            detail = f"duplicate member {name!r}: the sample already has a {ext!r} member (first kept)"
            yield QuarantineRecord(self.shard, self.key, IGNORED_MEMBER, detail)
            return
        self.members[ext] = data

    def cut(self, member: str | None, error: str) -> Iterator[Item]:
        """The stream broke while ``member`` (or the next header) was being read."""
        if self.key is not None:
            names = [*self.names, member] if member else self.names
            reason = Reason.NONCONTIGUOUS_KEY if self.late else Reason.TRUNCATED_SAMPLE
            yield self._record(reason, f"stream cut after members {names}: {error}")
        detail = f"tar stream ends early after {self.samples} complete samples: {error}"
        yield QuarantineRecord(self.shard, "", Reason.TRUNCATED_SHARD, detail)

    def finish(self) -> Iterator[Item]:
        if self.key is None:
            yield QuarantineRecord(self.shard, "", Reason.EMPTY_SHARD, "the tar holds no regular members")
        yield from self._close()

    def _close(self) -> Iterator[Item]:
        if self.key is None:
            return
        if self.late:
            yield self._record(Reason.NONCONTIGUOUS_KEY, f"late members {self.names} after other keys")
        elif self.rejected:
            self.samples += 1
            yield self._record(*self.rejected)
        else:
            self.samples += 1
            yield RawSample(shard=self.shard, key=self.key, members=self.members)

    def _record(self, reason: Reason, detail: str) -> QuarantineRecord:
        return QuarantineRecord(self.shard, self.key or "", reason, detail)


def _open_failure_reason(error: Exception, header_errors: list, source: _Source | None) -> Reason:
    if source is not None and source.raw_bytes == 0:
        return Reason.EMPTY_SHARD
    # A compressed stream cut before it gave a whole header (bzip2 and xz give nothing before a block ends).
    if source is not None and source.decompressed is not None and source.decompressed.cut:
        return Reason.TRUNCATED_SHARD
    # A valid first header (e.g. a pax header) whose follow-up is missing: a cut, not garbage.
    if any(isinstance(e, tarfile.SubsequentHeaderError) for e in header_errors):
        return Reason.TRUNCATED_SHARD
    return Reason.UNREADABLE_SHARD


def _split_name(info: tarfile.TarInfo) -> tuple[str, str, str] | None:
    """``(member name, key, extension)`` for a regular file, ``None`` for anything skipped."""
    if not info.isreg():
        return None
    name = info.name
    while name.startswith("./"):
        name = name[2:]
    base = name.rsplit("/", 1)[-1]
    if not base or base.startswith("."):
        return None
    return _split_path(name)


def _split_path(name: str) -> tuple[str, str, str]:
    base = name.rsplit("/", 1)[-1]
    stem, _, ext = base.partition(".")
    return name, name[: len(name) - len(base)] + stem, ext.lower()


def _printable(name: str) -> str:
    """``name`` as valid UTF-8 text. tarfile decodes header bytes with ``surrogateescape``: an invalid byte
    becomes a lone surrogate, which no UTF-8 string can hold. Such bytes are shown as ``\\xNN``."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _watching_tarinfo(header_errors: list) -> type[tarfile.TarInfo]:
    """A TarInfo class that records header errors, which ``TarFile.next`` otherwise swallows."""

    class _WatchedTarInfo(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:
            try:
                return super().fromtarfile(tf)
            except tarfile.HeaderError as e:
                header_errors.append(e)
                raise

    return _WatchedTarInfo


def _describe(error: BaseException) -> str:
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    text = str(error)
    return f"{name}: {text}" if text else name

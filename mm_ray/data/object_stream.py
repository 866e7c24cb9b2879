"""Reading one object-store object forward, once, in order: retried when the endpoint drops, pinned to the version
it started with.

    stream = ResumingStream(fs, "bucket/train/shard-000007.tar", buffer_size=4 << 20, retry=Backoff())
    stream.read(10240)     # the object's bytes, exactly as stored
    stream.pin             # 'ETag "9b2c..."' (and its VersionId where the bucket keeps versions)

pyarrow's S3 file issues one ranged GET per read, and cannot ask for a given version or ``If-Match`` an ETag
(``S3FileSystem`` has no such option). So the stream checks the object itself: it opens with a HEAD that
records the ETag, fetches ``buffer_size`` bytes per GET, and after every GET asks again (a HEAD): S3 reads are
strongly consistent, so a HEAD that still shows the first ETag proves the GET before it read that version.
Where the ETag changed (the object was replaced mid-read), ``ObjectChanged`` is raised before any byte of the
suspect GET is handed out: the reader keeps the samples it finished and records the shard as truncated,
instead of splicing two versions into samples. One HEAD per buffer (4 MiB by default) is the price.

A dropped connection, at the open or mid-read, is retried with ``Backoff``'s waits and resumed at the byte
reached; a missing object (404) or a refused one (403) is not retried. When every retry fails the last error
is raised, naming the retries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pyarrow
import pyarrow.fs as pafs

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Backoff:
    """How often, and how patiently, a read from object storage is retried after a transient error.

    Waits ``first_s``, then twice as long each time up to ``max_s``, at most ``attempts`` times: the default
    rides out about 20 s of an endpoint being away (a dropped connection, a restarting gateway, throttling
    that outlasts the S3 client's own few quick retries).
    """

    attempts: int = 6
    first_s: float = 0.5
    max_s: float = 8.0

    def delays(self) -> Iterator[float]:
        for attempt in range(self.attempts):
            yield min(self.max_s, self.first_s * 2**attempt)


OBJECT_STORE_RETRY = Backoff()


class ObjectChanged(OSError):
    """The object was replaced while it was being read; the message names both versions and the byte reached."""


# Not worth a retry: the object is not there, or this client may not read it.
_FINAL = (FileNotFoundError, PermissionError, ObjectChanged)


class ResumingStream:
    """A forward-only read of one object that survives dropped connections and never mixes two versions.

    The bytes handed out are exactly the object's, in order, once, all of one version (see the module
    docstring). Raises ``ObjectChanged`` where the object was replaced, ``OSError`` naming the retries when the
    endpoint stays away longer than ``retry`` waits, ``FileNotFoundError`` for a missing object.
    """

    def __init__(self, fs: pafs.FileSystem, path: str, *, buffer_size: int, retry: Backoff):
        self._fs, self._path, self._buffer_size, self._retry = fs, path, buffer_size, retry
        self._file: pyarrow.NativeFile | None = None
        self._fetched = 0  # bytes of the object fetched so far
        self._buffer, self._at = b"", 0  # the last GET's bytes, and how many of them were handed out
        self._eof = False
        self.pin = ""
        self.pin = self._retrying(self._open)  # the first open's version is the one to read

    def read(self, size: int | None = -1) -> bytes:
        parts, wanted = [], -1 if size is None or size < 0 else size
        while wanted != 0:
            if self._at == len(self._buffer):
                if self._eof:
                    break
                self._buffer, self._at = self._retrying(self._fetch), 0
                if not self._buffer:
                    self._eof = True
                    break
            end = len(self._buffer) if wanted < 0 else min(len(self._buffer), self._at + wanted)
            parts.append(self._buffer[self._at : end])
            wanted = wanted if wanted < 0 else wanted - (end - self._at)
            self._at = end
        return b"".join(parts)

    def _open(self) -> str:
        """Open (a HEAD) and return the object's version; ``ObjectChanged`` when it is not the pinned one."""
        file = self._fs.open_input_file(self._path)
        version = _version(file.metadata())
        if self.pin and version != self.pin:
            self._changed(version)
        self._file = file
        return version

    def _fetch(self) -> bytes:
        """One GET of the next ``buffer_size`` bytes, then a HEAD proving they were the pinned version's."""
        if self._file is None:
            self._open()  # after a dropped connection
        data = self._file.read_at(self._buffer_size, self._fetched)
        now = _version(self._fs.open_input_file(self._path).metadata())
        if now != self.pin:
            self._changed(now)
        self._fetched += len(data)
        return data

    def _changed(self, now: str) -> None:
        raise ObjectChanged(
            f"the object changed while it was read ({self.pin} -> {now}) at byte {self._fetched:,}: what "
            "follows is not read, so no sample mixes two versions"
        )

    def _retrying(self, step: Callable[[], T]) -> T:
        delays, retries = self._retry.delays(), 0
        while True:
            try:
                return step()
            except _FINAL:
                raise
            except OSError as err:
                self._drop()
                delay = next(delays, None)
                if delay is None:
                    raise OSError(f"{err} (after {retries} retries with back-off)") from err
                time.sleep(delay)
                retries += 1

    def _drop(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> ResumingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _version(metadata: dict) -> str:
    """What identifies the object's content: its ETag (and VersionId), else its time and size."""
    tags = {k.lower(): (v.decode() if isinstance(v, bytes) else str(v)) for k, v in (metadata or {}).items()}
    if "etag" in tags:
        return f"ETag {tags['etag']}" + (f" VersionId {tags['versionid']}" if "versionid" in tags else "")
    return f"Last-Modified {tags.get('last-modified', '?')} Content-Length {tags.get('content-length', '?')}"

"""webdataset's compressed members: ``<key>.<ext>.gz`` holds the gzip of what ``<key>.<ext>`` would hold.

    data = gunzip_member(raw, cap=64 << 20)    # bytes, at most ``cap`` of them
    logical_extension("txt.gz")                # "txt": the role the member plays once decompressed

webdataset's decoder does the same (``gzfilter``: gunzip, then decode by the extension without ``.gz``).
Decompression is bounded: the output is produced in chunks and abandoned as soon as it passes ``cap``, so a
gzip bomb (megabytes that inflate to gigabytes) costs at most ``cap`` plus one chunk of memory.
"""

from __future__ import annotations

import gzip
import io
import zlib

GZ_SUFFIX = ".gz"
CHUNK = 1 << 20


class TooLarge(ValueError):
    """The member decompresses to more than the cap."""


class BadCompression(ValueError):
    """The member is not valid gzip (bad header, bad CRC, cut short)."""


def logical_extension(ext: str) -> str:
    """``"txt.gz"`` -> ``"txt"``; any other extension (``"gz"`` alone included) unchanged."""
    if ext.endswith(GZ_SUFFIX) and len(ext) > len(GZ_SUFFIX):
        return ext[: -len(GZ_SUFFIX)]
    return ext


def gunzip_member(data: bytes, cap: int) -> bytes:
    """The decompressed bytes of a gzip member; ``TooLarge`` past ``cap`` bytes, ``BadCompression`` when
    the bytes are not a complete, valid gzip stream (concatenated gzip members are one stream, as gzip(1))."""
    parts: list[bytes] = []
    total = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as f:
            while True:
                # read(n) inflates at most n bytes (zlib's max_length): memory stays at cap + one chunk.
                chunk = f.read(min(CHUNK, cap + 1 - total))
                if not chunk:
                    break
                total += len(chunk)
                if total > cap:
                    raise TooLarge(f"decompresses to more than {cap:,} bytes")
                parts.append(chunk)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise BadCompression(f"not a valid gzip stream ({type(e).__name__}: {e})") from None
    return b"".join(parts)

"""Where the shards are: expand user specs into shard URLs and open them (local disk or S3).

Usage::

    from mm_ray.data.sources import expand_shards, open_shard

    options = {"endpoint_override": "127.0.0.1:9000", "scheme": "http"}  # or {} for AWS defaults
    urls = expand_shards(["data/train/", "s3://bucket/train/shard-{000000..000099}.tar"],
                         storage_options=options)
    with open_shard(urls[0], options) as stream:
        ...  # hand the stream to mm_ray.data.tar_stream.iter_samples

A spec is a directory (every ``*.tar``, ``*.tar.gz``/``*.tgz``, ``*.tar.bz2``/``*.tbz2``, ``*.tar.xz``/``*.txz``
directly inside it), a glob
(``*``, ``?``, ``[...]``; they never match across ``/``), a brace range (``shard-{000..099}.tar``),
a plain file, or a list of those; any of them may be an ``s3://bucket/key`` URL. Local paths
come back absolute, S3 shards as ``s3://bucket/key``. Brace-expanded names are *not* checked for
existence here (that would cost one request per shard): a missing one surfaces by name when it is
opened. Globs and directories are listed, and a spec that matches nothing is a ``ShardSpecError`` (a ``ValueError``).
A local file whose name is not valid UTF-8 (a latin-1 byte, say) is listed with the byte escaped
(``caf\\xe9.tar``): no reader can open it by a text name, so it becomes an unreadable shard named in the
summary, and the other shards are read as usual.

``storage_options`` is a plain dict of ``pyarrow.fs.S3FileSystem`` keyword arguments
(``endpoint_override``, ``scheme``, ``region``, ``access_key``, ``secret_key``, ``session_token``,
``anonymous``, ...). Leave the keys out to use the standard AWS environment variables and
credential chain. Shard URLs and options are plain strings and dicts, so they pickle into Ray tasks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from fnmatch import fnmatchcase

import braceexpand
import pyarrow
import pyarrow.fs as pafs

from mm_ray.data.object_stream import OBJECT_STORE_RETRY, Backoff, ResumingStream

__all__ = ["OBJECT_STORE_RETRY", "Backoff", "ResumingStream", "ShardOpenError", "ShardSpecError", "expand_shards",
           "filesystem_for", "open_shard"]  # fmt: skip

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
"""A directory's shards: plain tars and the whole-shard compressions ``tar_stream`` reads (by magic bytes)."""
S3_PREFIX = "s3://"
_GLOB_CHARS = frozenset("*?[")
# pyarrow's S3 input file issues one ranged GET per read() call, and tarfile reads 10 KiB at a
# time; buffering turns that into a few large requests per shard. Harmless for local files.
DEFAULT_BUFFER_SIZE = 4 << 20


class ShardSpecError(ValueError):
    """A shard spec matches nothing or cannot be interpreted; the message names the spec."""


class ShardOpenError(OSError):
    """A shard could not be opened; the message starts with the shard URL."""


def expand_shards(specs: str | Sequence[str], *, storage_options: dict | None = None) -> list[str]:
    """Turn shard specs into a sorted, de-duplicated list of shard URLs (see the module docstring)."""
    if isinstance(specs, str):
        specs = [specs]
    urls: set[str] = set()
    for spec in specs:
        try:
            found = _expand_spec(spec, storage_options)
        except OSError as e:
            raise OSError(f"cannot list shards for {spec!r}: {e}") from e
        if not found:
            raise ShardSpecError(f"no shards match {spec!r}")
        urls.update(found)
    return sorted(urls)


def filesystem_for(url: str, storage_options: dict | None = None) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a shard URL or local path; ``path`` is what the filesystem expects.

    Local paths are made absolute; ``storage_options`` only applies to ``s3://`` URLs.
    """
    if url.startswith(S3_PREFIX):
        path = url[len(S3_PREFIX) :].rstrip("/")
        if not path or path.startswith("/"):
            raise ShardSpecError(f"S3 URL {url!r} has no bucket")
        return _s3_filesystem(storage_options or {}), path
    if "://" in url and not url.startswith("file://"):
        raise ShardSpecError(f"unsupported URL scheme in {url!r} (use a local path or s3://bucket/key)")
    return _local_filesystem(), _local_path(url)


def open_shard(
    url: str,
    storage_options: dict | None = None,
    *,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    retry: Backoff = OBJECT_STORE_RETRY,
) -> pyarrow.NativeFile | ResumingStream:
    """Open a shard as a forward-only binary stream; raises ``ShardOpenError`` naming ``url`` on failure.

    The bytes are returned as stored (no transparent decompression): the tar reader handles gzip itself.
    An ``s3://`` shard comes as a ``ResumingStream`` (``mm_ray.data.object_stream``): its open and a connection
    lost mid-shard are retried with ``retry``'s back-off, resuming at the byte reached, and it reads only the
    version of the object it opened (a replaced object ends the shard there, never splices two versions).
    """
    try:
        fs, path = filesystem_for(url, storage_options)
        if url.startswith(S3_PREFIX):
            return ResumingStream(fs, path, buffer_size=buffer_size, retry=retry)
        return fs.open_input_stream(path, compression=None, buffer_size=buffer_size)
    except (OSError, ValueError, TypeError, pyarrow.ArrowException) as e:
        hint = (
            "; a file name that is not valid UTF-8 is listed escaped (\\xNN): rename it"
            if "\\x" in url
            else ""
        )
        raise ShardOpenError(f"cannot open shard {url!r}: {e}{hint}") from e


def _expand_spec(spec: str, storage_options: dict | None) -> list[str]:
    names = list(braceexpand.braceexpand(spec))
    braced = names != [spec]
    found: list[str] = []
    for name in names:
        fs, path = filesystem_for(name, storage_options)
        if _GLOB_CHARS & set(path):
            found += _glob(fs, path)
        elif braced:
            found.append(path)  # not checked: a missing shard is reported when it is opened
        else:
            found += _file_or_directory(fs, path)
    return [_url_like(spec, path) for path in found]


def _file_or_directory(fs: pafs.FileSystem, path: str) -> list[str]:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [path]
    if info.type == pafs.FileType.Directory:
        return [f for f in _files_below(fs, path, recursive=False) if _is_shard_name(f.rsplit("/", 1)[-1])]
    return []


def _files_below(fs: pafs.FileSystem, base: str, *, recursive: bool) -> list[str]:
    """Paths of the files under ``base`` (``allow_not_found``). Local names are read as bytes: pyarrow raises
    ``UnicodeDecodeError`` for the whole listing on one name that is not UTF-8 (object store keys always are)."""
    if not isinstance(fs, pafs.LocalFileSystem):
        selector = pafs.FileSelector(base, recursive=recursive, allow_not_found=True)
        return [f.path for f in fs.get_file_info(selector) if f.type == pafs.FileType.File]
    if not os.path.isdir(base):
        return []
    found = []
    for directory, _dirs, files in os.walk(os.fsencode(base)) if recursive else [_one_level(base)]:
        for name in files:
            if os.path.isfile(os.path.join(directory, name)):
                found.append(_text_path(os.path.join(directory, name)))
    return found


def _one_level(base: str) -> tuple[bytes, list[bytes], list[bytes]]:
    with os.scandir(os.fsencode(base)) as entries:
        return os.fsencode(base), [], [e.name for e in entries]


def _text_path(path: bytes) -> str:
    """A local path as text; a byte that is not UTF-8 is shown as ``\\xNN``, never a raw decode error."""
    return path.decode("utf-8", "backslashreplace")


def _glob(fs: pafs.FileSystem, pattern: str) -> list[str]:
    """Match ``pattern`` segment by segment, listing only below its last glob-free directory."""
    parts = pattern.split("/")
    first_glob = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    if first_glob == 0:
        raise ShardSpecError(
            f"glob {pattern!r} needs a fixed directory (or bucket) before the first wildcard"
        )
    base = "/".join(parts[:first_glob]) or "/"
    wanted = parts[first_glob:]
    matches = []
    for path in _files_below(fs, base, recursive=len(wanted) > 1):
        rel = path[len(base) :].lstrip("/").split("/")
        if len(rel) == len(wanted) and all(map(fnmatchcase, rel, wanted)):
            matches.append(path)
    return matches


def _is_shard_name(name: str) -> bool:
    return name.lower().endswith(SHARD_SUFFIXES)


def _url_like(spec: str, path: str) -> str:
    return S3_PREFIX + path if spec.startswith(S3_PREFIX) else path


def _local_path(url: str) -> str:
    path = url[len("file://") :] if url.startswith("file://") else url
    return os.path.abspath(os.path.expanduser(path))


def _s3_filesystem(storage_options: dict) -> pafs.S3FileSystem:
    frozen = tuple(sorted(storage_options.items()))
    try:
        hash(frozen)
    except TypeError:  # e.g. proxy_options given as a dict: build it uncached
        return _build_s3_filesystem(frozen)
    return _cached_s3_filesystem(frozen)


@functools.lru_cache(maxsize=8)
def _cached_s3_filesystem(frozen_options: tuple) -> pafs.S3FileSystem:
    # Cached per process: a Ray worker reads many shards with the same options, and building an
    # S3FileSystem (credential chain, connection pool) for each one is wasted work.
    return _build_s3_filesystem(frozen_options)


def _build_s3_filesystem(frozen_options: tuple) -> pafs.S3FileSystem:
    try:
        return pafs.S3FileSystem(**dict(frozen_options))
    except TypeError as e:
        raise ValueError(f"bad storage_options for pyarrow.fs.S3FileSystem: {e}") from e


@functools.lru_cache(maxsize=1)
def _local_filesystem() -> pafs.LocalFileSystem:
    return pafs.LocalFileSystem()

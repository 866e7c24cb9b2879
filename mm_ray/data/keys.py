"""A shard's sample key as a file name: the one way any writer (``mm-ray generate``, and whatever writes a file
per sample next) names a file after a sample.

    key_file_name("000123", "_0.png")                  # '000123_0.png' (a plain key stays as it is)
    key_file_name("train/0001", "_0.png")              # 'train_0001-6b8f8147_0.png'
    key_file_name("../../victim/pwned.txt", "_0.png")  # 'victim_pwned.txt-2c6d3b2e_0.png': inside the folder

A key is data from a shard: it may hold ``/``, ``..``, a leading ``-`` or ``.``, control characters, bytes that are
not UTF-8, or thousands of characters. Joined to a directory as it is, it writes elsewhere, or fails (a missing
directory) and takes the whole run with it. The name returned is one path component, whatever the key: only
``[A-Za-z0-9._-]``, never starting with ``.`` or ``-``, at most ``MAX_STEM`` characters before the suffix. A key
that had to change gets a short hash of itself appended, so two keys never share a name (``a/b`` and ``a_b``).
"""

from __future__ import annotations

import hashlib
import re

MAX_STEM = 120
"""Longest stem (name without suffix): file systems allow 255 bytes, and writers add suffixes."""

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_OTHER = re.compile(r"[^A-Za-z0-9._-]+")


def key_file_name(key: str, suffix: str = "") -> str:
    """``key`` (a sample's ``__key__``) as a single safe file name, ``suffix`` appended (e.g. ``"_0.png"``)."""
    if not _PLAIN.fullmatch(suffix.lstrip("._-") or "x"):
        raise ValueError(f"suffix {suffix!r}: a writer's own suffix is letters, digits, '.', '_' and '-'")
    if _PLAIN.fullmatch(key) and len(key) <= MAX_STEM:
        return key + suffix
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    readable = _OTHER.sub("_", key).lstrip("._-")[: MAX_STEM - len(digest) - 1]
    return f"{readable}-{digest}{suffix}" if readable else f"key-{digest}{suffix}"

"""Reading saved records (cache manifests, encoder specs, benchmark and trial results) field by field.

Every record mm_ray writes to a file is a frozen dataclass with one writer (``to_dict``) and one reader
(``from_dict``). The readers share the checks here, so a record with a field the code does not know, or without
one it needs, fails naming the field rather than surfacing later as a ``KeyError``::

    fields = record_fields(CacheManifest, data, "cache manifest")    # a dict of the known fields, or RecordError

Pure Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


class RecordError(ValueError):
    """A saved record is not one this code reads: the message names the record and the field at fault."""


def as_mapping(data: Any, what: str) -> Mapping[str, Any]:
    """``data`` itself when it is a mapping, else ``RecordError`` naming ``what``."""
    if not isinstance(data, Mapping):
        raise RecordError(f"{what}: expected a mapping of fields, got {type(data).__name__}")
    return data


def record_fields(cls: type, data: Any, what: str, *, unsaved: Sequence[str] = ()) -> dict[str, Any]:
    """``data`` as the keyword arguments of dataclass ``cls`` (unconverted); ``RecordError`` when it is not a
    mapping, names a field ``cls`` lacks, or lacks a field without a default. ``unsaved``: fields of ``cls``
    that files never hold (derived while reading): one in ``data`` is unknown too."""
    data = as_mapping(data, what)
    fields = [f for f in dataclasses.fields(cls) if f.name not in unsaved]
    known = [f.name for f in fields]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise RecordError(f"{what}: unknown field(s) {unknown}; known: {known}")
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise RecordError(f"{what}: missing field(s) {missing}")
    return dict(data)


def plain(record: Any) -> dict[str, Any]:
    """A record's fields as plain data (tuples as lists, nested records as dicts): the start of a writer."""
    return {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return to_dict() if to_dict is not None else plain(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

"""Reading saved records (cache manifests, encoder specs, benchmark and trial results) field by field.

Every record mm_ray writes to a file is a frozen dataclass with one writer (``to_dict``) and one reader
(``from_dict``). The readers share the checks here, so a record with a field the code does not know, or without
one it needs, fails naming the field rather than surfacing later as a ``KeyError``::

    fields = record_fields(CacheManifest, data, "cache manifest")    # a dict of the known fields, or RecordError
    run = read_record(TrainRun, data, "bench train result")         # nested records built from their type hints
    plain(run)                                                       # and back to plain data

Pure Python.
"""

from __future__ import annotations

import dataclasses
import types
import typing
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


def read_record(cls: type, data: Any, what: str) -> Any:
    """Dataclass ``cls`` from the plain data ``plain`` made of one: ``record_fields``' checks, then every field
    converted by its type hint (a nested record, a mapping or tuple of them, a tuple of values)."""
    hints = typing.get_type_hints(cls)
    fields = record_fields(cls, data, what)
    return cls(**{name: _typed(hints[name], value, f"{what}: {name}") for name, value in fields.items()})


def _typed(tp: Any, value: Any, what: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _typed(inner[0], value, what) if len(inner) == 1 else value
    if dataclasses.is_dataclass(tp):
        return read_record(tp, value, what)
    if origin in (dict, Mapping) and args:
        return {k: _typed(args[1], v, f"{what}.{k}") for k, v in as_mapping(value, what).items()}
    if origin is tuple and args:
        return tuple(_typed(args[0], v, f"{what}[{i}]") for i, v in enumerate(value))
    return value


def plain(record: Any, *, omit_none: bool = False) -> dict[str, Any]:
    """A record's fields as plain data (tuples as lists, nested records as dicts): the start of a writer.
    ``omit_none``: fields that are None and default to None are left out (what was not measured)."""
    return {
        f.name: _plain(getattr(record, f.name))
        for f in dataclasses.fields(record)
        if not (omit_none and getattr(record, f.name) is None and f.default is None)
    }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return to_dict() if to_dict is not None else plain(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

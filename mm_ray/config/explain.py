"""Read the field docstrings of the schema (the string literal under each field) for ``mm-ray config explain``."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import typing
from functools import cache

from mm_ray.config.schema import Config


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: docstring}`` for one dataclass, parsed from its source."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def explain(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """Rows ``(dotted key, default, docstring)`` for every leaf field, depth first."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(explain(tp, prefix=f"{key}."))
        else:
            rows.append((key, repr(getattr(default, f.name)), docs.get(f.name, "")))
    return rows

"""Readable text tables and summaries, for people (the CLI prints them; Python callers may too).

    print(format_table(["preset", "accuracy"], [["late_concat", 0.812], ["additive", 0.70]]))
    print(format_summary("train summary", {"epochs_run": 12, "metrics": {"val_accuracy": 0.81}}))

``format_table`` is also valid Markdown, so a table can be pasted into the README.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain, aligned text table (also valid Markdown, so it can be pasted into the README)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join([line, rule, *body])


def format_summary(title: str, summary: dict[str, Any]) -> str:
    """``key: value`` lines under a title; nested dicts are flattened as ``a.b``."""
    lines = [title, "-" * len(title)]
    for key, value in _flatten(summary):
        lines.append(f"  {key:<32} {_fmt(value)}")
    return "\n".join(lines)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.extend(_flatten(value, f"{name}."))
        else:
            out.append((name, value))
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "-"
    if isinstance(value, dict) and not value:
        return "-"
    return str(value)

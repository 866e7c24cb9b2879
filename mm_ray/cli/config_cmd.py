"""``mm-ray config show [--config FILE] [key=value ...]`` and ``mm-ray config explain``.

``show`` prints the resolved config with its credentials hidden (``<hidden>``): a terminal is scrolled back,
shared and logged."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from mm_ray.cli.common import add_config_args, config_from_args, split_overrides
from mm_ray.config.explain import explain
from mm_ray.config.load import as_dict, persistable
from mm_ray.tables import format_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved config, or explain every key")
    p.add_argument("action", choices=["show", "explain"])
    p.add_argument("overrides", nargs="*", help="key=value overrides (for show)")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.action == "explain":
        print(format_table(["key", "default", "meaning"], explain()))
        return 0
    rest, overrides = split_overrides(args.overrides)
    if rest:
        raise SystemExit(f"mm-ray config show: not key=value: {' '.join(rest)}")
    print(yaml.safe_dump(shown(as_dict(config_from_args(args, overrides))), sort_keys=False), end="")
    return 0


HIDDEN = "<hidden>"


def shown(raw: dict[str, Any]) -> dict[str, Any]:
    """The config as it may be printed: credentials (``data.storage_options`` keys that are not settings, a
    tracking URI's ``user:password@``) never reach a terminal or a log; a set credential shows as ``<hidden>``."""
    out = persistable(raw)
    given, kept = raw["data"]["storage_options"], out["data"]["storage_options"]
    out["data"]["storage_options"] = {k: kept.get(k, HIDDEN) for k in given}
    return out

"""What every config-driven command shares: ``--config FILE``, ``key=value`` overrides, ``--json PATH``.

Overrides are positional words of the form ``dotted.key=value`` mixed with the command's own
positionals, e.g. ``mm-ray preprocess shards/ --out cache image.size=128 pools.image.num_cpus=0.5``.
A word counts as an override only when it starts with an identifier path followed by ``=``, so
shard paths such as ``data/split=train/x.tar`` stay paths.
"""

from __future__ import annotations

import argparse
import re

from mm_ray.config.load import load_config
from mm_ray.config.schema import Config

_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*=")


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="pipeline YAML (see pipelines/); defaults apply without one")
    p.add_argument("--json", metavar="PATH", help="also write the final summary as JSON")


def split_overrides(words: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` overrides from other positional words (order kept)."""
    overrides = [w for w in words if _OVERRIDE.match(w)]
    return [w for w in words if not _OVERRIDE.match(w)], overrides


def config_from_args(args: argparse.Namespace, overrides: list[str]) -> Config:
    return load_config(args.config, overrides)

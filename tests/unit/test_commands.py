"""The command table (``mm_ray.commands``) is the command line's grammar: the CLI's parsers hold to it, and job
submission reads a command's words with it."""

from __future__ import annotations

import argparse

import mm_ray.cli.main as cli
from mm_ray.commands import COMMANDS, command, overrides

FLAGS = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._HelpAction,
    argparse._StoreConstAction,
    argparse.BooleanOptionalAction,
)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_table_is_the_parsers_grammar() -> None:
    parsers = _parsers()
    assert [c.name for c in COMMANDS] == list(parsers)
    for spec in COMMANDS:
        taking = {
            o for a in parsers[spec.name]._actions if not isinstance(a, FLAGS) for o in a.option_strings
        }
        assert taking == spec.value_options(), spec.name
        assert ("--config" in taking) == spec.loads_config, spec.name


def test_overrides_are_told_from_option_values_as_the_parser_tells_them() -> None:
    argv = [
        "evaluate",
        "ckpt",
        "shards/",
        "--ensemble",
        "other=run",
        "pools.fused.num_cpus=0.5",
        "--json",
        "x=y",
    ]
    assert overrides(argv) == ["pools.fused.num_cpus=0.5"]
    assert overrides(["tune", "--space", "a=b.yaml", "train.lr=0.1", "data/split=train/x.tar"]) == [
        "train.lr=0.1"
    ]
    assert command("jobs").local_only and not command("train").local_only

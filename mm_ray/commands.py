"""The ``mm-ray`` command line's grammar, as data: its commands, which of them load a config and which run on the
user's machine only, the options that take a value, and what a ``key=value`` override looks like.

Two readers, one table: the CLI (``mm_ray.cli``) builds its parsers with these names (a unit test holds every
parser to the table), and job submission (``mm_ray.cluster.submit``) reads a command's words with it before the
job leaves the machine.

    command("tune").takes_value("--space")        # True
    overrides(["tune", "--space", "s.yaml", "train.lr=0.1"])   # ["train.lr=0.1"]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*=")
"""A ``dotted.key=value`` word: an identifier path, then ``=`` (so a path such as ``data/split=train/x.tar`` is
not one)."""

CONFIG_OPTIONS = ("--config", "-c")
"""The option naming a command's pipeline YAML."""
JSON_OPTION = "--json"
"""The option naming where a command writes its summary as JSON."""
FILE_OPTIONS = {"--config": "--config", "-c": "--config", "--space": "--space"}
"""Options whose value is a project file a job needs (its canonical name)."""


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``mm-ray`` command."""

    name: str
    loads_config: bool = True
    """Takes ``--config`` and ``key=value`` overrides."""
    local_only: bool = False
    """Runs on the user's machine only (it talks to a cluster; it is never a job itself)."""
    options: tuple[str, ...] = ()
    """Its own options that take a value (besides ``--config``/``-c`` and ``--json``)."""

    def value_options(self) -> frozenset[str]:
        """Every option of the command that takes a value."""
        common = (*CONFIG_OPTIONS, JSON_OPTION) if self.loads_config else (JSON_OPTION,)
        return frozenset((*common, *self.options))

    def takes_value(self, option: str) -> bool:
        return option in self.value_options()


COMMANDS = (
    Command("demo"),
    Command("make-shards"),
    Command("preprocess", options=("--out",)),
    Command("train"),
    Command("evaluate", options=("--batch-size", "--quarantine-log", "--ensemble", "--workers")),
    Command("predict", options=("--out", "--quarantine-log")),
    Command("export", options=("--out", "--format")),
    Command(
        "serve",
        loads_config=False,
        options=(
            "--host",
            "--port",
            "--replicas",
            "--num-cpus",
            "--max-batch-size",
            "--address",
            "--builder",
            "--plugin",
        ),
    ),
    Command("embed", options=("--out",)),
    Command("generate", options=("--from", "--to", "--n", "--out", "--actors")),
    Command("tune", options=("--space", "--resume")),
    Command(
        "bench",
        options=(
            "--shards",
            "--cores",
            "--modes",
            "--cache",
            "--source",
            "--bomb-gib",
            "--plot",
            "--repeat",
            "--scale",
        ),
    ),
    Command("config"),
    Command(
        "submit",
        loads_config=False,
        local_only=True,
        options=(
            "--address",
            "--token",
            "--token-file",
            "--submission-id",
            "--entrypoint-num-cpus",
            "--entrypoint-num-gpus",
            "--entrypoint-memory",
            "--entrypoint-resources",
            "--runtime-env-json",
            "--runtime-env",
            "--include",
        ),
    ),
    Command("jobs", loads_config=False, local_only=True, options=("--address", "--token", "--token-file")),
)
"""Every command, in the order ``mm-ray -h`` lists them."""

_BY_NAME = {c.name: c for c in COMMANDS}


def command(name: str) -> Command:
    """The command called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no mm-ray command {name!r}; commands: {', '.join(_BY_NAME)}") from None


def overrides(argv: Sequence[str]) -> list[str]:
    """The ``key=value`` words of a command line (``argv[0]`` is the command), option values left out."""
    spec = _BY_NAME.get(argv[0]) if argv else None
    out, skip = [], False
    for word in argv[1:]:
        if skip:
            skip = False
            continue
        if spec is not None and spec.takes_value(word):
            skip = True
            continue
        if OVERRIDE.match(word):
            out.append(word)
    return out

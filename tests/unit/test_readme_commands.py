"""Every ``mm-ray`` command in the README's code blocks is one the CLI takes as written: the command and its
options parse with the real parser, and its ``key=value`` overrides (with a block's shell variables expanded)
are keys and values the config accepts. What the commands do is run by their own tests: the From Python block
(test_readme_python), your own shards (test_own_shards), your own modality (test_plugin_modality), the tasks'
commands (test_tasks), predict/export/serve (test_predict, test_serve)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mm_ray.cli.common import split_overrides
from mm_ray.cli.main import parse_args
from mm_ray.config.load import load_config

ROOT = Path(__file__).parents[2]


def readme_commands() -> list[str]:
    """The README's shell lines that run ``mm-ray`` (continuation lines joined, block variables expanded)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        variables: dict[str, str] = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if match := re.fullmatch(r'([A-Z]+)="(.*)"', line):
                variables[match[1]] = match[2]
            elif line.startswith("mm-ray "):
                for name, value in variables.items():
                    line = line.replace(f"${name}", value)
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_the_newcomers_commands() -> None:
    shown = {shlex.split(c)[1] for c in COMMANDS}
    assert {"preprocess", "train", "evaluate", "tune", "submit", "predict", "export", "serve"} <= shown


@pytest.mark.parametrize("command", COMMANDS, ids=[c[:70] for c in COMMANDS])
def test_every_readme_command_parses_and_its_overrides_are_valid_config(command: str) -> None:
    argv = shlex.split(command, comments=True)[1:]
    args = parse_args(argv)  # an unknown command or option exits: the test fails
    if args.command in ("submit", "jobs", "serve", "export"):
        return  # no config overrides of their own (submit's command is checked by test_submit_plan)
    _, overrides = split_overrides(argv)
    config = args.config if getattr(args, "config", None) and (ROOT / args.config).exists() else None
    load_config(ROOT / config if config else None, overrides)  # unknown keys or bad values raise ConfigError

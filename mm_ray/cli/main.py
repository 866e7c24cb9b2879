"""The ``mm-ray`` console script: one entry point, one subcommand per job.

    mm-ray demo                         the main job: demo shards -> preprocess -> train -> score -> sweep
    mm-ray make-shards OUT              write the synthetic tri-modal benchmark (known Bayes accuracy)
    mm-ray preprocess SHARDS --out DIR  decode shards once into the model-ready Parquet cache
    mm-ray train train.cache=DIR        train a fusion model with Ray Train (resumes by name)
    mm-ray evaluate CKPT SHARDS         score a checkpoint on any shard set, per modality subset
    mm-ray embed CKPT SHARDS            per-modality embeddings and cross-modal retrieval
    mm-ray generate CKPT --from text --to image SHARDS   generated images / audio (mvae, cgan checkpoints)
    mm-ray tune --config F              fusion architecture search with Ray Tune (ASHA); --resume NAME
    mm-ray bench ingest|memory|train    benchmarks, each against a baseline measured in the same run
    mm-ray config show|explain          print the resolved config / every key with its meaning
    mm-ray submit --address URL -- CMD  run an mm-ray command as a Ray job on a cluster; `mm-ray jobs` to watch

Every config-driven command takes ``--config FILE`` (a YAML under ``pipelines/``), dotted
``key=value`` overrides among its positionals, and ``--json PATH`` for its summary. Each command module
parses, calls one function of the ``mm_ray`` library and prints; none imports another.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

from mm_ray.cli import (
    bench,
    config_cmd,
    demo,
    embed,
    evaluate,
    generate,
    jobs,
    make_shards,
    preprocess,
    train,
    tune,
)
from mm_ray.cli.console import quiet_ray_noise
from mm_ray.cluster.submit import ClusterError, SubmitError
from mm_ray.config.load import ConfigError
from mm_ray.data.cache import CacheError
from mm_ray.data.ledger import LEDGER_LOST, ErrorBudgetExceeded, LedgerLost
from mm_ray.data.sources import ShardOpenError, ShardSpecError
from mm_ray.train.checkpoint import CheckpointError

COMMANDS = (demo, make_shards, preprocess, train, evaluate, embed, generate, tune, bench, config_cmd, jobs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mm-ray",
        description="mm_ray: multimodal fusion training on Ray (image, text, audio, features, your own modalities).",
        epilog="Run `mm-ray COMMAND -h` for a command's options; `mm-ray config explain` lists every config key.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    # `mm-ray submit` checks the command it sends with this very parser; handed over, not imported.
    parser.set_defaults(parse_command=parse_args)
    return parser


# The positional list of each command that also takes key=value overrides. argparse stops filling
# a positional list at the first option, so words typed after an option arrive as "extras" and
# are appended here: `preprocess shards/ --out cache image.size=128` works as written.
WORDS_DEST = {
    "demo": "overrides",
    "make-shards": "out",
    "preprocess": "shards",
    "config": "overrides",
    "bench": "overrides",
    "train": "overrides",
    "evaluate": "shards",
    "embed": "shards",
    "generate": "shards",
    "tune": "overrides",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    dest = WORDS_DEST.get(args.command)
    if extra and (dest is None or any(word.startswith("-") for word in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        setattr(args, dest, [*(getattr(args, dest) or []), *extra])
    return args


class _ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is at the time (tests and tools swap them)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @property  # type: ignore[override]
    def stream(self):
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Lines(logging.Formatter):
    """Progress lines as they are; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


@contextlib.contextmanager
def show_progress() -> Iterator[None]:
    """While inside: the library's progress lines (the ``mm_ray`` logger at INFO) go to stdout, warnings to
    stderr. The logger is left as it was afterwards, so a caller running ``main(argv)`` in its own process
    (a notebook, a test) keeps its logging."""
    package = logging.getLogger("mm_ray")
    if any(getattr(h, "_mm_ray_cli", False) for h in package.handlers):
        yield
        return
    saved = (package.level, package.propagate)
    out = _ConsoleHandler("stdout")
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = _ConsoleHandler("stderr")
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(_Lines("%(message)s"))
        handler._mm_ray_cli = True  # type: ignore[attr-defined]
        package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
    try:
        yield
    finally:
        for handler in (out, err):
            package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real `mm-ray` process (not a test or a caller passing argv): hide Ray's noise
        quiet_ray_noise()
    args = parse_args(argv)
    try:
        with show_progress():
            return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"mm-ray {args.command}: config error: {err}", file=sys.stderr)
        return 2
    except (ShardSpecError, ShardOpenError, SubmitError, ClusterError, CacheError, CheckpointError) as err:
        print(f"mm-ray {args.command}: {err}", file=sys.stderr)
        return 2
    except ErrorBudgetExceeded as err:
        print(f"mm-ray {args.command}: {err}", file=sys.stderr)
        return 3
    except LedgerLost:
        # Ray re-raises it wrapped in a task error whose text is a remote traceback: the message alone.
        print(f"mm-ray {args.command}: {LEDGER_LOST}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""What every command shares: ``--config FILE``, ``key=value`` overrides, ``--json PATH``, a progress bar.

Overrides are positional words of the form ``dotted.key=value`` mixed with the command's own
positionals, e.g. ``mm-ray preprocess shards/ --out cache image.size=128 pools.image.num_cpus=0.5``.
A word counts as an override only when it starts with an identifier path followed by ``=``, so
shard paths such as ``data/split=train/x.tar`` stay paths.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mm_ray.cli.console import stderr_is_terminal
from mm_ray.commands import CONFIG_OPTIONS, JSON_OPTION, OVERRIDE
from mm_ray.config.schema import Config
from mm_ray.settings import load_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(*CONFIG_OPTIONS, help="pipeline YAML (see pipelines/); defaults apply without one")
    p.add_argument(JSON_OPTION, metavar="PATH", help="also write the final summary as JSON")


def add_checkpoint_and_shards_args(p: argparse.ArgumentParser) -> None:
    """The positional words of a command that reads a checkpoint and scores shards with it (evaluate, predict,
    embed, generate): ``CHECKPOINT [SHARD_SPEC | key=value ...]``; ``split_overrides`` parts the second."""
    p.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its latest checkpoint)")
    p.add_argument(
        "shards", nargs="*", help="shard specs and key=value overrides (no specs: data.val_shards)"
    )


def split_overrides(words: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` overrides from other positional words (order kept)."""
    overrides = [w for w in words if OVERRIDE.match(w)]
    return [w for w in words if not OVERRIDE.match(w)], overrides


def config_from_args(args: argparse.Namespace, overrides: list[str]) -> Config:
    """The command's config, every name in it checked (``mm_ray.settings``) before Ray starts."""
    return load_config(args.config, overrides)


def write_json(path: str | Path | None, summary: dict[str, Any]) -> None:
    """Write ``summary`` as JSON when ``path`` is given (``--json PATH``)."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")


class PolledProgress:
    """A tqdm bar (stderr) updated every ``interval`` seconds from ``poll()``; silent when not a TTY, so logs
    and CI output stay readable. Its signature is ``mm_ray.progress.ProgressFactory``'s::

        with PolledProgress("preprocess", poll=lambda: samples_read(), total=2000):
            ...  # blocks; the bar keeps moving meanwhile
    """

    def __init__(self, desc: str, poll: Callable[[], int], total: int | None = None, interval: float = 0.5):
        self._poll = poll
        self._interval = interval
        self._stop = threading.Event()
        disable = not stderr_is_terminal()
        self._bar = tqdm(
            total=total, desc=desc, unit="sample", disable=disable, dynamic_ncols=True, leave=True
        )
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _update(self) -> None:
        try:
            value = int(self._poll())
        except Exception:
            return
        if value > self._bar.n:
            self._bar.update(value - self._bar.n)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._update()

    def __enter__(self) -> PolledProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self._bar.close()

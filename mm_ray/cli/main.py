"""The ``mm-ray`` console script: one entry point, one subcommand per job.

    mm-ray demo                         generate demo shards, preprocess them on local Ray, print the summary
    mm-ray make-shards OUT              write the synthetic tri-modal benchmark (known Bayes accuracy)
    mm-ray preprocess SHARDS --out DIR  decode shards once into the model-ready Parquet cache
    mm-ray train train.cache=DIR        train a fusion model on a cache with Ray Train (resumes by name)
    mm-ray evaluate CKPT SHARDS         score a checkpoint on any shard set, per modality subset
    mm-ray tune --config F              fusion architecture search with Ray Tune (ASHA); --resume NAME
    mm-ray bench ingest                 decode floor vs DataLoader vs the Ray pipeline, with ratios
    mm-ray config show|explain          print the resolved config / every key with its meaning
    mm-ray submit --address URL -- CMD  run an mm-ray command as a Ray job on a cluster; `mm-ray jobs` to watch

Every config-driven command takes ``--config FILE`` (a YAML under ``pipelines/``), dotted
``key=value`` overrides among its positionals, and ``--json PATH`` for its summary.
"""

from __future__ import annotations

import argparse
import sys

from mm_ray.cli import bench, config_cmd, demo, embed, evaluate, jobs, make_shards, preprocess, train, tune
from mm_ray.config.load import ConfigError
from mm_ray.data.ledger import ErrorBudgetExceeded
from mm_ray.data.sources import ShardOpenError, ShardSpecError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mm-ray",
        description="mm_ray: multimodal (image + text + audio) fusion training on Ray.",
        epilog="Run `mm-ray COMMAND -h` for a command's options; `mm-ray config explain` lists every config key.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, make_shards, preprocess, train, evaluate, embed, tune, bench, config_cmd, jobs):
        module.add_parser(sub)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"mm-ray {args.command}: config error: {err}", file=sys.stderr)
        return 2
    except (ShardSpecError, ShardOpenError) as err:
        print(f"mm-ray {args.command}: {err}", file=sys.stderr)
        return 2
    except ErrorBudgetExceeded as err:
        print(f"mm-ray {args.command}: {err}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

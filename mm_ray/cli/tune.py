"""``mm-ray tune``: fusion architecture search with Ray Tune on a preprocessed cache.

    mm-ray tune --config pipelines/tune_small.yaml                       # a sweep named after `name`
    mm-ray tune --config pipelines/tune_small.yaml tune.num_samples=16 tune.searcher=optuna name=tpe
    mm-ray tune --config pipelines/tune_small.yaml --space my_space.yaml
    mm-ray tune --resume tune_small                # after Ctrl-C or a crash: finish the unfinished trials

Calls ``mm_ray.sweep`` / ``mm_ray.resume_sweep`` (``mm_ray.tune.sweep``): each trial is a Ray Train run
(``train.*``, ``model.*`` of the config, with the space's keys sampled) on ``train.cache``; ASHA stops the
laggards between epochs. When the caches do not exist yet and ``data.shards`` (and ``data.val_shards``) are
set, they are preprocessed first, once: trials never decode shards. One line per trial event as it happens.

At the end it prints the leaderboard (preset, searched keys, best metric, epochs run) and where the results
are: ``<output_dir>/<name>/{trials.csv, trials.json, best_config.yaml, best_by_preset.png,
trial_curves.png, summary.json}``, and where the sweep is tracked (``track.*``: every trial in
TensorBoard by default, one MLflow run per trial with ``track.mlflow``). ``mm-ray train --config
<output_dir>/<name>/best_config.yaml`` retrains the winner. ``--resume NAME`` takes the sweep's name (under ``output_dir``) or its results directory (a path); the
saved base config and space are used, so no ``--config`` is needed. A saved sweep is data: the cluster
(``ray.*``), the storage options (credentials, endpoint) and any ``model.builder`` come from the command line or
the environment on resume, never from ``sweep.yaml``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mm_ray.cli.common import add_config_args, config_from_args, write_json
from mm_ray.config.load import ConfigError
from mm_ray.tables import format_summary
from mm_ray.track.run import view_commands
from mm_ray.train.outputs import json_safe


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="fusion architecture search with Ray Tune (ASHA) on a preprocessed cache")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. tune.num_samples=16)")
    p.add_argument("--space", help="search space YAML (default: tune.space of the config)")
    p.add_argument(
        "--resume", metavar="NAME", help="continue the interrupted sweep NAME (or its results dir)"
    )
    add_config_args(p)
    p.set_defaults(func=main)


RESUME_KEYS = ("ray.", "data.storage_options", "model.builder=", "modalities.plugins=", "output_dir=")
"""The overrides ``--resume`` takes: where to find the sweep, and what a saved ``sweep.yaml`` may not choose
(the cluster, the storage credentials and endpoint, code to import)."""


def results_dir_of(resume: str, output_dir: str) -> Path:
    """``--resume NAME`` is the sweep ``<output_dir>/NAME``; a path (``runs/x``, ``./x``, absolute) is the results
    directory itself. A bare name is never looked up in the working directory: whatever sits there is not
    necessarily the user's own sweep."""
    path = Path(resume).expanduser()
    return path if len(path.parts) > 1 or resume.startswith((".", "/", "~")) else Path(output_dir) / resume


def main(args: argparse.Namespace) -> int:
    # Imported here: Ray Tune and Train are heavy to import and `mm-ray tune -h` should not wait for them.
    from mm_ray.tune.progress import TrialLog
    from mm_ray.tune.report import sweep_report
    from mm_ray.tune.space import load_space
    from mm_ray.tune.sweep import resume_sweep, sweep, with_objective

    cfg = config_from_args(args, args.overrides)
    if args.resume:
        kept = [o for o in args.overrides if not o.startswith(RESUME_KEYS)]
        if args.space or kept:
            raise ConfigError(
                "--resume: the sweep keeps its saved config and space; drop --space and overrides "
                f"{' '.join(kept)} (on resume only ray.*, data.storage_options, model.builder, modalities.plugins and "
                "output_dir "
                "are taken, and from you alone: the saved sweep never chooses them)"
            )
        results_dir = results_dir_of(args.resume, cfg.output_dir)
        print(f"resuming sweep {results_dir}", flush=True)
        result = resume_sweep(
            results_dir,
            ray=cfg.ray,
            storage_options=cfg.data.storage_options,
            builders=[cfg.model.builder] if cfg.model.builder else [],
            plugins=cfg.modalities.plugins,
        )
    else:
        space_path = args.space or cfg.tune.space
        if not space_path:
            raise ConfigError("tune.space: required (a search space YAML, or `mm-ray tune --space FILE`)")
        log = TrialLog(
            load_space(space_path), metric=with_objective(cfg).tune.metric, max_epochs=cfg.train.epochs
        )
        result = sweep(cfg, space_path, callbacks=[log])
    print("\n" + sweep_report(result))
    tracking = result.summary.get("tracking") or {}
    if tracking:
        print("\n" + format_summary("experiment tracking", tracking))
        print("\n".join(f"  view: {command}" for command in view_commands(tracking).values()))
    write_json(args.json, json_safe({**result.summary, "records": [r.to_dict() for r in result.records]}))
    # A sweep in which no trial reported its metric (all errored, say) did not do its job.
    return 0 if result.best or result.interrupted else 1

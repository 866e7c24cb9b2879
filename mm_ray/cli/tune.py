"""``mm-ray tune``: fusion architecture search with Ray Tune on a preprocessed cache.

    mm-ray tune --config pipelines/tune_small.yaml                       # a sweep named after `name`
    mm-ray tune --config pipelines/tune_small.yaml tune.num_samples=16 tune.searcher=optuna name=tpe
    mm-ray tune --config pipelines/tune_small.yaml --space my_space.yaml
    mm-ray tune --resume tune_small                # after Ctrl-C or a crash: finish the unfinished trials

Each trial is a Ray Train run (``train.*``, ``model.*`` of the config, with the space's keys sampled) on
``train.cache``; ASHA stops the laggards between epochs. When the caches do not exist yet and ``data.shards``
(and ``data.val_shards``) are set, they are preprocessed first, once: trials never decode shards.

At the end it prints the leaderboard (preset, searched keys, best metric, epochs run) and where the results
are: ``<output_dir>/<name>/{trials.csv, trials.json, best_config.yaml, best_by_preset.png,
trial_curves.png, summary.json}``. ``mm-ray train --config <output_dir>/<name>/best_config.yaml`` retrains
the winner. ``--resume NAME`` takes the sweep's name (under ``output_dir``) or its results directory; the
saved base config and space are used, so no ``--config`` is needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mm_ray.cli.common import add_config_args, config_from_args
from mm_ray.cli.report import format_summary, format_table, write_json
from mm_ray.cluster.storage import warn_if_unshared
from mm_ray.config.load import ConfigError
from mm_ray.config.schema import Config
from mm_ray.runtime import init_ray
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


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, args.overrides)
    if args.resume:
        return _resume(args, cfg)
    init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory_mb)
    warn_if_unshared(cfg.tune.storage_path or cfg.output_dir)
    # Imported here: Ray Tune and Train are heavy to import and the other commands never need them.
    from mm_ray.tune.sweep import plan_sweep, run_sweep

    preprocessed = ensure_caches(cfg)
    sweep = plan_sweep(cfg, args.space)
    summary = run_sweep(sweep, callbacks=[trial_log(sweep)])
    summary["decoded"]["this_run"] = sum(preprocessed.values())
    return _finish(args, summary, sweep)


def _resume(args: argparse.Namespace, cfg: Config) -> int:
    from mm_ray.tune.sweep import load_sweep, resume_sweep

    if args.space or args.overrides:
        raise ConfigError("--resume: the sweep keeps its saved config and space; drop --space and overrides")
    results_dir = _results_dir(args.resume, cfg)
    sweep = load_sweep(results_dir)
    r = sweep.cfg.ray
    init_ray(r.address, r.num_cpus, r.object_store_memory_mb)
    print(f"resuming sweep {sweep.cfg.name} ({sweep.experiment_path})", flush=True)
    summary = resume_sweep(results_dir)
    summary["decoded"]["this_run"] = 0
    return _finish(args, summary, sweep)


def _finish(args: argparse.Namespace, summary: dict[str, Any], sweep: Any) -> int:
    print_results(summary, sweep)
    write_json(args.json, json_safe(summary))
    # A sweep in which no trial reported its metric (all errored, say) did not do its job.
    return 0 if summary["best"] or summary["interrupted"] else 1


def _results_dir(name: str, cfg: Config) -> Path:
    path = Path(name)
    return path if (path / "sweep.yaml").is_file() else Path(cfg.output_dir) / name


def trial_log(sweep: Any) -> Any:
    """The per-trial progress lines of ``sweep`` (a Tune callback)."""
    from mm_ray.tune.progress import TrialLog

    return TrialLog(sweep.space, metric=sweep.cfg.tune.metric, max_epochs=sweep.cfg.train.epochs)


def ensure_caches(cfg: Config) -> dict[str, int]:
    """Preprocess ``data.shards`` / ``data.val_shards`` into ``train.cache`` / ``train.val_cache`` when those
    do not exist yet; returns the samples decoded now per cache (none when both were there)."""
    from mm_ray.cli.preprocess import run_preprocess

    t, d = cfg.train, cfg.data
    decoded: dict[str, int] = {}
    tokenizer_json = None
    for key, cache, shards in (
        ("train.cache", t.cache, d.shards),
        ("train.val_cache", t.val_cache, d.val_shards),
    ):
        if not cache:
            continue
        manifest = Path(cache) / "manifest.json"
        if manifest.is_file():
            tokenizer_json = tokenizer_json or (Path(cache) / "tokenizer.json").read_text()
            continue
        if not shards:
            raise ConfigError(f"{key}: {cache} is not a preprocessed cache and no shards are set to make it")
        print(
            f"preprocessing {len(shards)} shard spec(s) into {cache} (once for the whole sweep)", flush=True
        )
        # The val cache must share the train cache's tokenizer: token ids index one embedding table.
        summary = run_preprocess(cfg, shards, cache, tokenizer_json=tokenizer_json)
        tokenizer_json = tokenizer_json or (Path(cache) / "tokenizer.json").read_text()
        decoded[key] = int(summary["samples_read"])
    return decoded


def print_results(summary: dict[str, Any], sweep: Any) -> None:
    """The leaderboard, the sweep's summary and where its files are."""
    from mm_ray.tune.results import leaderboard

    headers, rows = leaderboard(summary["records"], sweep.space, sweep.cfg.tune.metric)
    print(f"\nleaderboard ({sweep.cfg.tune.metric}, {sweep.cfg.tune.mode})")
    print(format_table(headers, rows))
    shown = {k: v for k, v in summary.items() if k not in ("records", "outputs", "best")}
    if summary["best"]:
        best = summary["best"]
        shown["best"] = {
            "trial": best["trial_id"],
            "preset": best["preset"],
            sweep.cfg.tune.metric: best["best"],
        }
    print("\n" + format_summary("sweep summary", shown))
    if summary["interrupted"]:
        print(f"\ninterrupted: continue with `mm-ray tune --resume {sweep.results_dir}`")
    print("\n" + format_summary("sweep outputs", summary["outputs"]))

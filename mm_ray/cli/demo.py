"""``mm-ray demo``: the main job on the embedded default, end to end on local Ray.

1. generate the synthetic benchmark shards (skipped when ``<run>/shards`` already matches),
2. train a tokenizer on the training captions,
3. preprocess the train and val shards through the per-modality actor pools into the cache,
4. train every preset in ``demo.train_presets`` and every ``demo.variants`` run (a preset with overrides, e.g.
   an auxiliary loss) with Ray Train on the cache (a resumable run each),
5. score the ``demo.ensemble`` runs' averaged predictions, and embed the val shards with each
   ``demo.retrieval`` run for a cross-modal retrieval table (``mm_ray.retrieval``),
6. run a small Ray Tune sweep over ``demo.sweep_presets`` (one trial each, ASHA; ``mm_ray.tune``),
7. print the benchmark's reference accuracies, the ingest summaries, each run's held-out accuracy against
   its analytic reference, accuracy per modality subset, the retrieval table and the sweep's leaderboard
   (``--json`` for all of it).

Outputs go to ``<output_dir>/<name>`` (``runs/demo`` with ``pipelines/demo.yaml``): ``shards/``, ``cache/``
``train/<run>/`` (checkpoints, metrics, curves), ``embeddings/<run>/`` and ``sweep/`` (the Tune experiment and its results).
Running it again reuses the shards and resumes or skips finished training runs and sweep trials.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from mm_ray.cli.common import add_config_args, config_from_args, split_overrides
from mm_ray.cli.embed import retrieval_table
from mm_ray.cli.make_shards import caps_table, generate
from mm_ray.cli.preprocess import obtain_tokenizer, run_preprocess
from mm_ray.cli.report import format_summary, format_table, write_json
from mm_ray.cli.tune import print_results
from mm_ray.cluster.storage import warn_if_unshared
from mm_ray.columns import SUBSETS
from mm_ray.config.load import ConfigError, as_dict, config_from_dict
from mm_ray.config.schema import Config, DemoConfig
from mm_ray.demo.generate import load_manifest, shard_paths
from mm_ray.demo.learning import LearningRow, expectations_met, learning_rows
from mm_ray.models import PRESETS
from mm_ray.runtime import init_ray
from mm_ray.train.metrics import format_subset_table
from mm_ray.train.outputs import json_safe

DEMO_DEFAULTS = (
    "name=demo",
    "demo.num_samples=6000",
    "demo.samples_per_shard=500",
    "demo.min_image_px=96",
    "demo.max_image_px=192",
    "image.size=48",
    "audio.n_mels=32",
    "model.width=32",
    "train.epochs=12",
    "train.lr=0.002",
    "train.num_workers=1",
)
"""The embedded default of ``mm-ray demo`` (no ``--config``): the settings of ``pipelines/demo.yaml``, which
a unit test keeps equal. Laptop-sized: minutes on 2 cores."""


def demo_shards(demo: DemoConfig, shard_dir: Path) -> dict[str, Any]:
    """Reuse existing shards when they were generated with the same settings, else generate."""
    try:
        manifest = load_manifest(shard_dir)
        same = (
            manifest["seed"] == demo.seed
            and manifest["counts"]["total"] == demo.num_samples
            and manifest["image_size"] == [demo.min_image_px, demo.max_image_px]
        )
        if same:
            print(f"reusing demo shards in {shard_dir}")
            return manifest
    except (FileNotFoundError, ValueError, KeyError):
        pass
    return generate(demo, str(shard_dir))


def check_presets(presets: list[str], key: str = "demo.train_presets") -> None:
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(f"{key}: unknown preset(s) {unknown}; choose from {sorted(PRESETS)}")


DEMO_SWEEP_LR = (1.0e-3, 4.0e-3)
"""The learning-rate range the demo sweep samples (log-uniform) for each preset."""


def demo_sweep(cfg: Config, run_dir: Path) -> tuple[dict[str, Any], Any] | None:
    """The small sweep the demo ends with: one trial per ``demo.sweep_presets`` (a grid) with a sampled
    learning rate, ``demo.sweep_epochs`` epochs each, ASHA, on the demo cache; returns (summary, sweep).

    The experiment is ``<run>/sweep``: a second demo run collects it again instead of re-training it.
    """
    if not cfg.demo.sweep_presets:
        return None
    import ray.tune

    from mm_ray.cli.tune import trial_log
    from mm_ray.tune.space import parse_space
    from mm_ray.tune.sweep import plan_sweep, resume_sweep, run_sweep

    space = parse_space(
        {
            "model.preset": {"grid": list(cfg.demo.sweep_presets)},
            "train.lr": {"loguniform": list(DEMO_SWEEP_LR)},
        }
    )
    sweep_cfg = dataclasses.replace(
        cfg,
        name="sweep",
        output_dir=str(run_dir),
        train=dataclasses.replace(
            cfg.train,
            cache=str(run_dir / "cache" / "train"),
            val_cache=str(run_dir / "cache" / "val"),
            epochs=cfg.demo.sweep_epochs,
        ),
        tune=dataclasses.replace(
            cfg.tune, num_samples=1, searcher="random", scheduler="asha", grace_period=1, storage_path=None
        ),
    )
    sweep = plan_sweep(sweep_cfg, space=space)
    print(
        f"\nsweeping {len(cfg.demo.sweep_presets)} presets with Ray Tune -> {sweep.results_dir}", flush=True
    )
    if ray.tune.Tuner.can_restore(sweep.experiment_path):
        return resume_sweep(sweep.results_dir), sweep
    return run_sweep(sweep, callbacks=[trial_log(sweep)]), sweep


def run_configs(cfg: Config, run_dir: Path) -> dict[str, Config]:
    """The config of every training run the demo makes: ``demo.train_presets`` then ``demo.variants``, by name.

    Built before anything runs, so a bad variant override fails at once, naming ``demo.variants.<name>``.
    """
    base = dataclasses.replace(
        cfg,
        output_dir=str(run_dir / "train"),
        train=dataclasses.replace(
            cfg.train, cache=str(run_dir / "cache" / "train"), val_cache=str(run_dir / "cache" / "val")
        ),
    )
    runs = {
        preset: dataclasses.replace(base, name=preset, model=dataclasses.replace(cfg.model, preset=preset))
        for preset in cfg.demo.train_presets
    }
    for name, overrides in cfg.demo.variants.items():
        if name in runs:
            raise ConfigError(f"demo.variants.{name}: the name is taken by a run of demo.train_presets")
        try:
            variant = config_from_dict(as_dict(base), [*overrides, f"name={name}"])
        except ConfigError as err:
            raise ConfigError(f"demo.variants.{name}: {err}") from None
        check_presets([variant.model.preset], key=f"demo.variants.{name} (model.preset)")
        runs[name] = variant
    wanted = {"demo.ensemble": cfg.demo.ensemble, "demo.retrieval": cfg.demo.retrieval}
    for key, names in wanted.items():
        unknown = [n for n in names if n not in runs]
        if unknown:
            raise ConfigError(f"{key}: {unknown} not trained by the demo; choose from {list(runs)}")
    if len(cfg.demo.ensemble) == 1:
        raise ConfigError("demo.ensemble: an ensemble needs at least two runs")
    return runs


def train_runs(runs: dict[str, Config]) -> dict[str, dict[str, Any]]:
    """Train every run (a finished one is skipped, an unfinished one resumes); returns each summary by name."""
    # Imported here: Ray Train is heavy to import and a demo without training never needs it.
    from mm_ray.train.outputs import write_run_outputs
    from mm_ray.train.ray_trainer import fit

    summaries = {}
    for name, run_cfg in runs.items():
        run_path = Path(run_cfg.output_dir) / name
        print(f"training {name} ({run_cfg.train.epochs} epochs) -> {run_path}", flush=True)
        summary = fit(run_cfg)
        summary["preset"] = run_cfg.model.preset
        summary["outputs"] = write_run_outputs(run_path, config=as_dict(run_cfg), summary=summary)
        print(
            f"  {name}: val accuracy {summary['metrics'].get('val_accuracy', float('nan')):.3f}", flush=True
        )
        summaries[name] = summary
    return summaries


def ensemble_name(names: list[str]) -> str:
    """The learning table's name of the ensemble of ``names``."""
    return "ensemble(" + " + ".join(names) + ")"


def score_ensemble(cfg: Config, runs: dict[str, Config], val: list[str]) -> dict[str, Any] | None:
    """``demo.ensemble``'s runs' averaged predictions scored on the val shards (``mm-ray evaluate --ensemble``)."""
    if not cfg.demo.ensemble:
        return None
    from mm_ray.train.evaluate import evaluate_checkpoint

    first, *rest = (Path(runs[n].output_dir) / n for n in cfg.demo.ensemble)
    name = ensemble_name(cfg.demo.ensemble)
    print(f"scoring {name} on the val shards", flush=True)
    return {"name": name, **evaluate_checkpoint(first, val, ensemble=rest)}


def score_retrieval(cfg: Config, runs: dict[str, Config], val: list[str], run_dir: Path) -> dict[str, Any]:
    """Embed the val shards with each of ``demo.retrieval``'s runs and score cross-modal retrieval."""
    from mm_ray.retrieval.embed import embed_shards

    results = {}
    for name in cfg.demo.retrieval:
        out = run_dir / "embeddings" / name
        print(f"embedding the val shards with {name} -> {out}", flush=True)
        results[name] = embed_shards(Path(runs[name].output_dir) / name, val, out_dir=out, embed=cfg.embed)
    return results


def run_demo(cfg: Config) -> dict[str, Any]:
    check_presets(cfg.demo.train_presets)
    check_presets(cfg.demo.sweep_presets, key="demo.sweep_presets")
    run_dir = Path(cfg.output_dir) / cfg.name
    runs = run_configs(cfg, run_dir)
    shard_dir = run_dir / "shards"
    manifest = demo_shards(cfg.demo, shard_dir)
    print(caps_table(manifest))
    init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory_mb)
    warn_if_unshared(cfg.output_dir)
    train, val = shard_paths(shard_dir, "train"), shard_paths(shard_dir, "val")
    tokenizer_json = obtain_tokenizer(cfg, train)
    ingest = {
        split: run_preprocess(
            cfg, shards, run_dir / "cache" / split, tokenizer_json, expected=manifest["counts"][split]
        )
        for split, shards in (("train", train), ("val", val))
    }
    trained = train_runs(runs)
    ensemble = score_ensemble(cfg, runs, val)
    retrieval = score_retrieval(cfg, runs, val, run_dir)
    swept = demo_sweep(cfg, run_dir)
    accuracies = {name: s["metrics"]["val_accuracy"] for name, s in trained.items()}
    presets = {name: s["preset"] for name, s in trained.items()}
    if ensemble is not None:
        accuracies[ensemble["name"]] = ensemble["subsets"][SUBSETS[-1]]["accuracy"]
        # Averaged probabilities of per-modality models: additive in log space, so its reference is additive's.
        presets[ensemble["name"]] = "additive"
    rows = learning_rows(accuracies, manifest, modalities=cfg.model.modalities, presets=presets)
    return {
        "run_dir": str(run_dir),
        "bayes_accuracy": manifest["bayes_accuracy"],
        "caps": manifest["caps"],
        "preprocess": ingest,
        "training": trained,
        "ensemble": ensemble,
        "retrieval": retrieval,
        "learning": [dataclasses.asdict(r) for r in rows],
        "expectations_met": expectations_met(rows) if rows else None,
        # The sweep's records and its Sweep (for printing the leaderboard); `main` keeps them out of --json.
        "sweep": swept,
    }


def learning_table(rows: list[LearningRow]) -> str:
    """Each trained preset's held-out accuracy next to its analytic reference."""
    body = [
        [
            r.preset,
            f"{r.accuracy:.3f}",
            r.reference,
            f"{r.reference_accuracy:.3f}",
            f"{r.gap_points:+.1f}",
            r.verdict,
        ]
        for r in rows
    ]
    return format_table(
        ["preset", "val accuracy", "reference", "reference acc", "gap (pts)", "expectation"], body
    )


def print_training(summary: dict[str, Any]) -> None:
    """The learning table, then the best preset's accuracy per modality subset."""
    if not summary["training"]:
        return
    rows = [LearningRow(**r) for r in summary["learning"]]
    print("\nheld-out accuracy against the benchmark's references")
    print(learning_table(rows))
    if not summary["expectations_met"]:
        samples = summary["preprocess"]["train"]["samples_ok"]
        print(
            f"(a gap to the reference is expected with {samples:,} training samples: "
            "pipelines/demo_zoo.yaml trains at the scale that reaches it)"
        )
    subsets = {name: s["subsets"] for name, s in summary["training"].items()}
    if summary["ensemble"] is not None:
        subsets[summary["ensemble"]["name"]] = summary["ensemble"]["subsets"]
    variants = any(name != s["preset"] for name, s in summary["training"].items())
    if len(subsets) > 1 and (summary["ensemble"] is not None or variants):
        print("\nvalidation accuracy by modality subset, every run")
        print(subset_comparison(subsets))
    else:
        best = max((r for r in rows if r.preset in summary["training"]), key=lambda r: r.accuracy).preset
        print(f"\n{best}: validation accuracy by modality subset")
        print(format_subset_table(summary["training"][best]["subsets"]))
    if summary["retrieval"]:
        print("\ncross-modal retrieval on the val shards (chance in brackets)")
        print(retrieval_table({name: r["retrieval"] for name, r in summary["retrieval"].items()}))


def subset_comparison(subsets: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Accuracy per modality subset (rows) of each run (columns)."""
    names = list(subsets)
    rows = [[subset, *(f"{subsets[n][subset]['accuracy']:.3f}" for n in names)] for subset in SUBSETS]
    return format_table(["subset", *names], rows)


def ingest_table(ingest: dict[str, dict[str, Any]]) -> str:
    rows = [
        [split, s["samples_ok"], s["samples_quarantined"], s["shards"], s["samples_per_s"], s["out"]]
        for split, s in ingest.items()
    ]
    return format_table(["split", "samples ok", "quarantined", "shards", "samples/s", "cache"], rows)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate demo shards and preprocess them on local Ray (the main job)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    add_config_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    rest, overrides = split_overrides(args.overrides)
    if rest:
        raise SystemExit(f"mm-ray demo: not key=value: {' '.join(rest)}")
    if args.config is None:
        overrides = [*DEMO_DEFAULTS, *overrides]
    summary = run_demo(config_from_args(args, overrides))
    print(ingest_table(summary["preprocess"]))
    for split, s in summary["preprocess"].items():
        if s["samples_quarantined"]:
            print(format_summary(f"quarantine ({split})", s["quarantine_reasons"]))
    print_training(summary)
    swept = summary.pop("sweep")
    if swept is not None:
        sweep_summary, sweep = swept
        print_results(sweep_summary, sweep)
        summary["sweep"] = {k: v for k, v in sweep_summary.items() if k != "records"}
    write_json(args.json, json_safe(summary))
    return 0

"""The demo job (``mm-ray demo``, ``mm_ray.run_demo``): the whole system on the synthetic benchmark.

    import mm_ray

    result = mm_ray.run_demo(mm_ray.load_config(None, DEMO_DEFAULTS))   # = `mm-ray demo`
    result.learning            # each run's held-out accuracy against its analytic reference
    result.expectations_met    # every verdict positive?

1. generate the synthetic benchmark shards (skipped when ``<run>/shards`` already matches),
2. train a tokenizer on the training captions,
3. preprocess the train and val shards through the per-modality actor pools into the caches,
4. train every preset in ``demo.train_presets`` and every ``demo.variants`` run (a preset with overrides, e.g.
   an auxiliary loss) with Ray Train on the cache (a resumable run each),
5. score the ``demo.ensemble`` runs' averaged predictions, and embed the val shards with each
   ``demo.retrieval`` run for a cross-modal retrieval table (``mm_ray.retrieval``),
6. run a small Ray Tune sweep over ``demo.sweep_presets`` (one trial each, ASHA; ``mm_ray.tune``).

Outputs go to ``<output_dir>/<name>``: ``shards/``, ``cache/{train,val}``, ``train/<run>/`` (checkpoints,
metrics, curves), ``embeddings/<run>/`` and ``sweep/``. Running it again reuses the shards and caches and
resumes or skips finished training runs and sweep trials. Progress goes to the ``mm_ray`` logger (INFO).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from mm_ray.config.load import ConfigError, as_dict, config_from_dict
from mm_ray.config.schema import Config
from mm_ray.data.build import build_cache
from mm_ray.data.cache import Cache
from mm_ray.data.captions import obtain_tokenizer
from mm_ray.demo.dataset import reuse_or_write, shard_paths
from mm_ray.demo.learning import LearningRow, expectations_met, learning_rows
from mm_ray.modalities.registry import Registry, checked, modalities_of, model_modalities
from mm_ray.progress import ProgressFactory
from mm_ray.runtime import init_ray
from mm_ray.tables import format_table

logger = logging.getLogger(__name__)

DEMO_DEFAULTS = (
    "name=demo",
    "demo.num_samples=20000",
    "demo.samples_per_shard=500",
    "demo.min_image_px=48",
    "demo.max_image_px=96",
    "demo.train_presets=[film]",
    "demo.sweep_presets=[film, additive]",
    "demo.sweep_epochs=1",
    "demo.sweep_samples=1000",
    "image.size=32",
    "audio.n_mels=32",
    "text.max_length=24",
    "text.tokenizer_train_samples=2000",
    "audio.duration_s=0.5",
    "model.width=32",
    "train.epochs=6",
    "train.batch_size=32",
    "train.lr=0.002",
    "train.aux_loss_weight=0.5",
    "train.num_workers=1",
    "train.torch_threads=2",
    "train.subset_eval_every=0",
)
"""The embedded default of ``mm-ray demo`` (no ``--config``): the settings of ``pipelines/demo.yaml``, which
a unit test keeps equal. Laptop-sized: minutes on 2 cores."""

DEMO_SWEEP_LR = (1.0e-3, 4.0e-3)
"""The learning-rate range the demo sweep samples (log-uniform) for each preset."""


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What the demo did and how it scored."""

    run_dir: str
    manifest: dict[str, Any]
    """The benchmark's ``dataset.json``: Bayes accuracy, every subset's cap, the additive reference."""
    caches: dict[str, Cache]
    """``train`` / ``val``: the preprocessed caches (their manifests hold the ingest summaries)."""
    training: dict[str, Any]
    """Run name -> ``TrainResult``."""
    ensemble: dict[str, Any] | None
    """``mm_ray.evaluate``'s result for the ``demo.ensemble`` runs, with its ``name``."""
    retrieval: dict[str, dict[str, Any]]
    """Run name -> ``mm_ray.embed``'s result."""
    learning: list[LearningRow]
    sweep: Any
    """The closing sweep's ``SweepResult`` (None without ``demo.sweep_presets``)."""
    registry: Registry | None = None
    """The modalities the runs' models see, in canonical order (subset keys and tables follow them)."""

    @property
    def expectations_met(self) -> bool | None:
        """Every learning verdict positive (None when nothing was trained)."""
        return expectations_met(self.learning) if self.learning else None


def run_demo(cfg: Config, *, progress: ProgressFactory | None = None) -> DemoResult:
    """Run the demo job of ``cfg`` (see the module docstring); starts or joins Ray as ``cfg.ray`` says."""
    from mm_ray.cluster.storage import warn_if_unshared

    run_dir = Path(cfg.output_dir) / cfg.name
    runs = run_configs(cfg, run_dir)
    manifest = reuse_or_write(cfg.demo, run_dir / "shards", progress)
    init_ray(cfg.ray)
    warn_if_unshared(cfg.output_dir)
    train, val = shard_paths(run_dir / "shards", "train"), shard_paths(run_dir / "shards", "val")
    caches = demo_caches(cfg, run_dir, {"train": train, "val": val}, manifest, progress)
    trained = train_runs(runs)
    ensemble = score_ensemble(cfg, runs, val)
    retrieval = score_retrieval(cfg, runs, val, run_dir)
    swept = demo_sweep(cfg, run_dir)
    accuracies = {name: r.val_accuracy for name, r in trained.items()}
    presets = {name: r.preset for name, r in trained.items()}
    registry = modalities_of(cfg)
    registry = registry.only(model_modalities(cfg, registry))
    if ensemble is not None:
        accuracies[ensemble["name"]] = ensemble["subsets"][registry.full_subset]["accuracy"]
        # Averaged probabilities of per-modality models: additive in log space, so its reference is additive's.
        presets[ensemble["name"]] = "additive"
    subsets = {name: r.subsets for name, r in trained.items()}
    rows = learning_rows(accuracies, manifest, modalities=registry.names, presets=presets, subsets=subsets)
    return DemoResult(
        str(run_dir), manifest, caches, trained, ensemble, retrieval, rows, swept, registry=registry
    )


def demo_caches(
    cfg: Config,
    run_dir: Path,
    shards: dict[str, list[str]],
    manifest: dict[str, Any],
    progress: ProgressFactory | None,
) -> dict[str, Cache]:
    """The train and val caches, made now unless both exist from these shards with this preprocessing."""
    out = {split: str(run_dir / "cache" / split) for split in shards}
    current = _current_caches(cfg, out, shards)
    if current is not None:
        logger.info("reusing the preprocessed caches in %s", run_dir / "cache")
        return current
    tokenizer_json = obtain_tokenizer(cfg, shards["train"])
    return {
        split: build_cache(
            cfg,
            specs,
            out[split],
            tokenizer_json=tokenizer_json,
            progress=progress,
            expected=manifest["counts"][split],
        )
        for split, specs in shards.items()
    }


def _current_caches(
    cfg: Config, out: dict[str, str], shards: dict[str, list[str]]
) -> dict[str, Cache] | None:
    """Both caches when they were made from exactly ``shards`` with ``cfg``'s preprocessing, else None."""
    if not all(Cache.exists(uri) for uri in out.values()):
        return None
    caches = {split: Cache.open(uri) for split, uri in out.items()}
    tokenizer_json = caches["train"].tokenizer_json
    if cfg.text.tokenizer or caches["val"].tokenizer_json != tokenizer_json:
        return None
    if not all(cache.manifest.made_by(cfg, tokenizer_json, shards[split]) for split, cache in caches.items()):
        return None
    return caches


def run_configs(cfg: Config, run_dir: Path) -> dict[str, Config]:
    """The config of every training run the demo makes: ``demo.train_presets`` then ``demo.variants``, by name.

    Built before anything runs, so a bad variant override fails at once, naming ``demo.variants.<name>``.
    """
    check_features_variant(cfg)
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
            runs[name] = checked(config_from_dict(as_dict(base), [*overrides, f"name={name}"]))
        except ConfigError as err:
            raise ConfigError(f"demo.variants.{name}: {err}") from None
    wanted = {"demo.ensemble": cfg.demo.ensemble, "demo.retrieval": cfg.demo.retrieval}
    for key, names in wanted.items():
        unknown = [n for n in names if n not in runs]
        if unknown:
            raise ConfigError(f"{key}: {unknown} not trained by the demo; choose from {list(runs)}")
    if len(cfg.demo.ensemble) == 1:
        raise ConfigError("demo.ensemble: an ensemble needs at least two runs")
    return runs


def check_features_variant(cfg: Config) -> None:
    """``ConfigError`` when a run reads the ``features`` modality of demo shards that have none, or of another
    length than ``features.shape`` (every sample would be quarantined as ``bad_features``)."""
    if "features" not in modalities_of(cfg).names:
        return
    dim = cfg.demo.features_dim
    if dim == 0:
        raise ConfigError(
            "data.modalities: features is read, but the demo shards have none (demo.features_dim=0); set "
            "demo.features_dim (e.g. 16, with features.shape=[16]) for the features variant"
        )
    if list(cfg.features.shape or []) != [dim]:
        raise ConfigError(
            f"features.shape: the demo's feature vectors are [{dim}] (demo.features_dim), got {cfg.features.shape}"
        )


def train_runs(runs: dict[str, Config]) -> dict[str, Any]:
    """Train every run (a finished one is skipped, an unfinished one resumes); returns each ``TrainResult``."""
    # Imported here: Ray Train is heavy to import and a demo without training never needs it.
    from mm_ray.train.ray_trainer import fit

    results = {}
    for name, run_cfg in runs.items():
        logger.info(
            "training %s (%d epochs) -> %s", name, run_cfg.train.epochs, Path(run_cfg.output_dir) / name
        )
        results[name] = fit(run_cfg)
        logger.info("  %s: val accuracy %.3f", name, results[name].val_accuracy)
    return results


def ensemble_name(names: list[str]) -> str:
    """The learning table's name of the ensemble of ``names``."""
    return "ensemble(" + " + ".join(names) + ")"


def score_ensemble(cfg: Config, runs: dict[str, Config], val: list[str]) -> dict[str, Any] | None:
    """``demo.ensemble``'s runs' averaged predictions scored on the val shards (``mm-ray evaluate --ensemble``)."""
    if not cfg.demo.ensemble:
        return None
    from mm_ray.train.evaluate import evaluate

    first, *rest = (Path(runs[n].output_dir) / n for n in cfg.demo.ensemble)
    name = ensemble_name(cfg.demo.ensemble)
    logger.info("scoring %s on the val shards", name)
    return {"name": name, **evaluate(first, val, ensemble=rest, overrides=_ray_overrides(cfg))}


def score_retrieval(cfg: Config, runs: dict[str, Config], val: list[str], run_dir: Path) -> dict[str, Any]:
    """Embed the val shards with each of ``demo.retrieval``'s runs and score cross-modal retrieval."""
    from mm_ray.retrieval.embed import embed

    results = {}
    for name in cfg.demo.retrieval:
        out = run_dir / "embeddings" / name
        logger.info("embedding the val shards with %s -> %s", name, out)
        results[name] = embed(
            Path(runs[name].output_dir) / name,
            val,
            out_dir=out,
            embed_config=cfg.embed,
            overrides=_ray_overrides(cfg),
        )
    return results


def _ray_overrides(cfg: Config) -> list[str]:
    """The demo's own ``ray.*`` settings: a checkpoint's saved ones are never used (it is data, not settings)."""
    return [f"ray.{k}={v}" for k, v in as_dict(cfg.ray).items() if v is not None]


def demo_sweep(cfg: Config, run_dir: Path) -> Any:
    """The small sweep the demo ends with: one trial per ``demo.sweep_presets`` (a grid) with a sampled
    learning rate, ``demo.sweep_epochs`` epochs each, ASHA, on the demo cache; returns its ``SweepResult``.

    The experiment is ``<run>/sweep``: a second demo run collects it again instead of re-training it.
    """
    if not cfg.demo.sweep_presets:
        return None
    import ray.tune

    from mm_ray.tune.progress import TrialLog
    from mm_ray.tune.space import parse_space
    from mm_ray.tune.sweep import SweepResult, continue_experiment, plan_sweep, run_sweep

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
            limit_samples=cfg.demo.sweep_samples,
            # Trials run side by side and share the cores: one thread each.
            torch_threads=1,
        ),
        tune=dataclasses.replace(
            cfg.tune,
            num_samples=1,
            searcher="random",
            scheduler="asha",
            grace_period=1,
            storage_path=None,
            # The caches are kept in memory: trials need no CPU for reading them.
            data_cpus=min(cfg.tune.data_cpus, 0.5),
        ),
    )
    plan = plan_sweep(sweep_cfg, space=space)
    logger.info("sweeping %d presets with Ray Tune -> %s", len(cfg.demo.sweep_presets), plan.results_dir)
    if ray.tune.Tuner.can_restore(plan.experiment_path):
        summary = continue_experiment(plan)  # the demo's own plan: no saved file is read
    else:
        log = TrialLog(plan.space, metric=plan.cfg.tune.metric, max_epochs=plan.cfg.train.epochs)
        summary = run_sweep(plan, callbacks=[log])
    return SweepResult(plan, {k: v for k, v in summary.items() if k != "records"}, summary["records"])


def ingest_table(caches: dict[str, Cache]) -> str:
    """Samples kept and quarantined, shards and speed of each cache's preprocessing run."""
    rows = []
    for split, cache in caches.items():
        m = cache.manifest
        rate = m.ingest.samples_per_s if m.ingest is not None else "-"
        rows.append([split, m.samples_ok, m.samples_quarantined, len(m.shards), rate, cache.uri])
    return format_table(["split", "samples ok", "quarantined", "shards", "samples/s", "cache"], rows)

"""The Tune driver: run a fusion architecture sweep, resume an interrupted one, collect its results.

    import mm_ray

    result = mm_ray.sweep(mm_ray.load_config("pipelines/tune_small.yaml"))   # starts or joins Ray
    result.best.preset, result.summary["trial_epochs_fraction"], result.leaderboard()
    result = mm_ray.resume_sweep("runs/tune_small")    # after Ctrl-C / a crash: the unfinished trials only

    sweep = plan_sweep(cfg)                      # the steps: validate, load tune.space, fix paths, num_classes
    summary = run_sweep(sweep)                   # Tuner(...).fit() -> leaderboard records and files

The experiment lives in ``<tune.storage_path or output_dir>/<name>`` (Tune's state, one directory per trial,
and the trials' Train runs under ``train/<trial id>``); the results go to ``<output_dir>/<name>``:
``sweep.yaml`` (the base config and space, which ``--resume`` reads back), ``trials.csv``,
``trials.json``, ``best_config.yaml``, ``best_by_preset.png``, ``trial_curves.png`` and ``summary.json``.

Tracking (``track.*``, ``mm_ray.track.tune``): Tune's TensorBoard logger writes into every trial's directory
of the experiment (on by default); with ``track.mlflow`` the sweep is one MLflow run named ``<name>`` in the
experiment ``track.experiment``, each trial a run nested under it. The summary's ``tracking`` says where.

Scheduling: ASHA (``tune.scheduler``) judges trials by ``epoch``, which the trainer reports, rather than by
Tune's report count, which restarts at 0 when a trial is resumed. Trials run at most
``mm_ray.tune.resources.concurrency`` at a time. Every trial reads the preprocessed cache, so a sweep
decodes nothing: the summary's ``decoded`` says how many samples went into the cache, once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mm_ray.cluster.storage import warn_if_unshared
from mm_ray.config.load import ConfigError, as_dict, config_from_dict, persistable
from mm_ray.config.schema import Config, RayConfig
from mm_ray.data.cache import Cache
from mm_ray.modalities.registry import registry_with
from mm_ray.runtime import init_ray
from mm_ray.tasks import headline_metric
from mm_ray.train.outputs import json_safe
from mm_ray.tune import plots, results
from mm_ray.tune.resources import concurrency
from mm_ray.tune.space import SearchSpace, load_space, parse_space
from mm_ray.tune.trust import check_trusted_results, check_trusted_storage

SWEEP_FILE = "sweep.yaml"

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Sweep:
    """A checked sweep: the base config every trial starts from, and the space sampled over it."""

    cfg: Config
    space: SearchSpace

    @property
    def results_dir(self) -> Path:
        return Path(self.cfg.output_dir) / self.cfg.name

    @property
    def trials(self) -> int:
        """Trials the sweep runs: ``tune.num_samples`` per combination of the space's grids (random search)."""
        grids = self.space.grid_size() if self.cfg.tune.searcher == "random" else 1
        return self.cfg.tune.num_samples * grids

    @property
    def experiment_path(self) -> str:
        return f"{_absolute(self.cfg.tune.storage_path or self.cfg.output_dir)}/{self.cfg.name}"


def plan_sweep(
    cfg: Config, space_path: str | Path | None = None, *, space: SearchSpace | None = None
) -> Sweep:
    """Check ``cfg`` for a sweep and load its space (``space_path`` overrides ``tune.space``; a parsed
    ``space`` overrides both, as ``mm-ray demo``'s built-in sweep does)."""
    if space is None:
        path = space_path or cfg.tune.space
        if not path:
            raise ConfigError("tune.space: required (a search space YAML, or `mm-ray tune --space FILE`)")
        space = load_space(path, registry_with(tuple(cfg.modalities.plugins)))
        cfg = dataclasses.replace(cfg, tune=dataclasses.replace(cfg.tune, space=str(Path(path).resolve())))
    cfg = with_objective(cfg)
    _check(cfg)
    t = cfg.train
    # Trials run in Tune's per-trial working directories: relative paths would not resolve there.
    d = cfg.data
    cfg = dataclasses.replace(
        cfg,
        train=dataclasses.replace(
            t, cache=t.cache and _absolute(t.cache), val_cache=t.val_cache and _absolute(t.val_cache)
        ),
        data=dataclasses.replace(
            d, shards=[_absolute(s) for s in d.shards], val_shards=[_absolute(s) for s in d.val_shards]
        ),
    )
    if cfg.model.num_classes is None:
        # What `fit` would infer, once here rather than a Ray Data job in every trial.
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=_num_classes(cfg)))
    return Sweep(cfg, space)


def with_objective(cfg: Config) -> Config:
    """``cfg`` with ``tune.metric``/``tune.mode`` filled where unset: the task's headline metric
    (``mm_ray.tasks.headline_metric``: ``val_accuracy``, ``val_map``, ``val_r2``)."""
    metric, mode = headline_metric(cfg.task)
    tune = dataclasses.replace(
        cfg.tune,
        metric=cfg.tune.metric or metric,
        mode=cfg.tune.mode or (mode if not cfg.tune.metric else "max"),
    )
    return dataclasses.replace(cfg, tune=tune)


def streams(cfg: Config) -> bool:
    """Whether the sweep's trials stream ``data.shards`` through the ingest pools (no ``train.cache``)."""
    return not cfg.train.cache and bool(cfg.data.shards)


def _check(cfg: Config) -> None:
    t, tu = cfg.train, cfg.tune
    if not t.cache and not cfg.data.shards:
        raise ConfigError(
            "train.cache: set it to a preprocessed cache, or set data.shards for trials that stream the shards"
        )
    for key, cache in (("train.cache", t.cache), ("train.val_cache", t.val_cache)):
        if cache and not Cache.exists(cache, cfg.data.storage_options):
            raise ConfigError(f"{key}: {cache} is not a preprocessed cache (run `mm-ray preprocess` first)")
    if streams(cfg) and cfg.model.num_classes is None:
        raise ConfigError(
            "model.num_classes: required when trials stream data.shards (no cache to count from)"
        )
    has_val = t.val_cache if t.cache else (t.val_cache or cfg.data.val_shards)
    if tu.metric.startswith("val_") and not has_val:
        raise ConfigError(
            f"tune.metric: {tu.metric} needs train.val_cache or data.val_shards (trials validate on it)"
        )
    if t.num_workers < 1:
        raise ConfigError(
            "train.num_workers: a trial needs >= 1 Ray Train worker (local mode reports no epochs)"
        )
    if t.checkpoint_every_steps:
        # Tune's callback turns every Train report into a result: step checkpoints would count as epochs.
        raise ConfigError("train.checkpoint_every_steps: not in sweeps (trials checkpoint at epoch ends)")
    if tu.num_samples < 1:
        raise ConfigError("tune.num_samples: must be >= 1")
    if not 1 <= tu.grace_period <= t.epochs:
        raise ConfigError(f"tune.grace_period: must be between 1 and train.epochs ({t.epochs})")
    if tu.reduction_factor < 2:
        raise ConfigError("tune.reduction_factor: must be >= 2")


def run_sweep(sweep: Sweep, *, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Run the sweep to the end (or to Ctrl-C: the state is saved for ``resume_sweep``); returns the summary.

    ``callbacks`` are Tune callbacks; Tune saves them with the experiment and a resumed sweep gets them back.
    """
    import ray
    import ray.tune

    from mm_ray.track.tune import tune_callbacks, tune_logging
    from mm_ray.tune.cleanup import ReleaseStoppedRuns

    cfg = sweep.cfg
    if ray.tune.Tuner.can_restore(sweep.experiment_path):
        raise ConfigError(
            f"name: an experiment {sweep.experiment_path} exists; continue it with "
            f"`mm-ray tune --resume {cfg.name}` or choose another name="
        )
    save_sweep(sweep)
    resources = ray.cluster_resources()
    concurrent = concurrency(
        cfg,
        cpus=resources.get("CPU", 0.0),
        gpus=resources.get("GPU", 0.0),
        trials=sweep.trials,
        custom=resources,
    )
    logger.info("sweep %s: %d trials, at most %d at a time", cfg.name, sweep.trials, concurrent)
    tuner = ray.tune.Tuner(
        _trainable(sweep),
        param_space=sweep.space.param_space(cfg.tune.seed) if cfg.tune.searcher == "random" else None,
        tune_config=ray.tune.TuneConfig(
            metric=cfg.tune.metric,
            mode=cfg.tune.mode,
            search_alg=_searcher(sweep, concurrent),
            scheduler=_scheduler(cfg),
            num_samples=cfg.tune.num_samples,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=ray.tune.RunConfig(
            name=cfg.name,
            storage_path=_absolute(cfg.tune.storage_path or cfg.output_dir),
            # Tune saves these with the experiment: a resumed sweep releases and logs the same way.
            callbacks=[ReleaseStoppedRuns(), *tune_callbacks(cfg), *callbacks],
            verbose=0,
        ),
    )
    with _quiet_tune(), tune_logging(cfg.track):
        grid = tuner.fit()
    return collect(sweep, grid, concurrent=concurrent)


def continue_experiment(sweep: Sweep) -> dict[str, Any]:
    """Continue the experiment of ``sweep`` (its own plan, or ``load_sweep``'s reading of ``sweep.yaml``): trials
    that finished are kept as they are, unfinished ones continue (their Train runs from their last checkpoints);
    returns the summary with its records (``resume_sweep`` is the public form). Every file Tune will unpickle
    is checked first (``mm_ray.tune.trust``)."""
    import ray.tune

    from mm_ray.track.tune import tune_logging

    check_trusted_storage(sweep.experiment_path)  # before Ray starts: a refusal costs nothing
    init_ray(sweep.cfg.ray)  # a running Ray (the demo's) is reused
    if not ray.tune.Tuner.can_restore(sweep.experiment_path):
        raise ConfigError(f"--resume: no Tune experiment state in {sweep.experiment_path}")
    tuner = ray.tune.Tuner.restore(
        sweep.experiment_path,
        trainable=_trainable(sweep),
        resume_unfinished=True,
        # The trainable keeps no Tune checkpoint (Train keeps them): resuming an errored trial = restarting it.
        restart_errored=sweep.cfg.tune.retry_errored,
    )
    with _quiet_tune(), tune_logging(sweep.cfg.track):
        grid = tuner.fit()
    return collect(sweep, grid, concurrent=None)


TUNER_STATE = "tuner.pkl"
"""Ray Tune's experiment state: ``Tuner.restore`` unpickles it (Ray offers no other way to resume)."""


@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Tune's default console output prints an experiment box and a results path even at ``verbose=0``; its
    legacy output (``RAY_AIR_NEW_OUTPUT=0``, a documented switch) honours ``verbose=0``. A caller's own
    setting of the variable is kept."""
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = saved if saved is not None else "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)


def save_sweep(sweep: Sweep) -> Path:
    """Write ``results_dir/sweep.yaml``: the checked base config and the space, what ``--resume`` needs."""
    sweep.results_dir.mkdir(parents=True, exist_ok=True)
    path = sweep.results_dir / SWEEP_FILE
    path.write_text(
        yaml.safe_dump(
            {"config": persistable(as_dict(sweep.cfg)), "space": sweep.space.as_dict()}, sort_keys=False
        )
    )
    return path


def load_sweep(
    results_dir: str | Path,
    *,
    ray: RayConfig | None = None,
    storage_options: Mapping[str, Any] | None = None,
    builders: Sequence[str] = (),
    plugins: Sequence[str] = (),
) -> Sweep:
    """The ``Sweep`` saved in ``results_dir/sweep.yaml`` by ``run_sweep``, to resume it.

    The file is data, not settings: the cluster to join (``ray``) and the storage options (credentials,
    endpoint) are the caller's, never the file's; a ``model.builder`` it names (in the config or the space) is
    code, run only when the caller names it in ``builders``, and so is a plug-in modality (``plugins``). The directory must be this user's alone
    (``mm_ray.tune.trust``). ``ConfigError`` naming the file otherwise.
    """
    results_dir = Path(results_dir)
    path = results_dir / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(f"--resume: {path} not found (not a sweep's results directory)")
    check_trusted_results(results_dir)
    saved = yaml.safe_load(path.read_text())
    cfg = config_from_dict(saved["config"])
    foreign = [p for p in cfg.modalities.plugins if p not in plugins]
    if foreign:
        raise ConfigError(
            f"--resume: {path} names the plug-in modality {foreign[0]}: code named in a saved file is run only "
            f"when you name it yourself; pass modalities.plugins=[{', '.join(cfg.modalities.plugins)}] if you "
            "trust it"
        )
    space = parse_space(saved["space"], registry_with(tuple(cfg.modalities.plugins)))
    named = {cfg.model.builder} | {v for p in space.params if p.key == "model.builder" for v in p.args}
    untrusted = sorted(b for b in named if b and b not in builders)
    if untrusted:
        raise ConfigError(
            f"--resume: {path} names model.builder {', '.join(untrusted)}: code named in a saved file is run only "
            f"when you name it yourself; pass model.builder={untrusted[0]} if you trust that module"
        )
    data = dataclasses.replace(cfg.data, storage_options=dict(storage_options or {}))
    return Sweep(with_objective(dataclasses.replace(cfg, ray=ray or RayConfig(), data=data)), space)


def trial_dirname(trial: Any) -> str:
    """Short, stable trial directory names (Tune's default holds every parameter and a timestamp)."""
    return f"trial_{trial.trial_id}"


def _trainable(sweep: Sweep) -> Any:
    import ray.tune

    from mm_ray.tune.trainable import train_trial

    trainable = ray.tune.with_parameters(
        train_trial, base=sweep.cfg, space=sweep.space, storage=f"{sweep.experiment_path}/train"
    )
    # The driver only starts the Train run (its workers hold their own CPUs/GPUs): a fraction of a CPU.
    return ray.tune.with_resources(trainable, {"CPU": sweep.cfg.tune.driver_cpus})


def _searcher(sweep: Sweep, concurrent: int) -> Any:
    """The search algorithm, limited to ``concurrent`` running trials.

    The limit goes to the searcher itself: Tune ignores ``TuneConfig(max_concurrent_trials)`` when it is given
    a ``BasicVariantGenerator``, and then starts every trial at once, each waiting on its placement group.
    """
    tu = sweep.cfg.tune
    if tu.searcher == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        from mm_ray.tune.space import DefineByRun

        # Define-by-run: Optuna asks only for the parameters whose `when` holds (conditional spaces).
        optuna_search = OptunaSearch(
            space=DefineByRun(sweep.space),
            # Given here too: Tune does not pass TuneConfig's metric through a ConcurrencyLimiter.
            metric=tu.metric,
            mode=tu.mode,
            sampler=optuna.samplers.TPESampler(seed=tu.seed),
        )
        return ConcurrencyLimiter(optuna_search, max_concurrent=concurrent)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=tu.seed, max_concurrent=concurrent)


def _scheduler(cfg: Config) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.tune.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        # One past the last epoch: ASHA stops a trial that reaches max_t, which would end a run that has
        # trained all its epochs by killing it mid-shutdown. Every run ends after train.epochs anyway, and
        # the rungs (grace_period x reduction_factor^k) below train.epochs stay where they were.
        max_t=cfg.train.epochs + 1,
        grace_period=cfg.tune.grace_period,
        reduction_factor=cfg.tune.reduction_factor,
    )


def collect(sweep: Sweep, grid: Any, *, concurrent: int | None) -> dict[str, Any]:
    """Records from Tune's ResultGrid, the result files, and the summary (also written as summary.json)."""
    from mm_ray.track.tune import finish_sweep_run, sweep_tracking

    cfg = sweep.cfg
    records = results.rank([_record(sweep, result) for result in grid], cfg.tune.mode)
    out = sweep.results_dir
    outputs = results.write_trials(records, out, sweep.space)
    best = results.best_config(records, cfg, sweep.space)
    if best is not None:
        # Written, so as plain data without secrets (the storage credentials stay in this process).
        (out / "best_config.yaml").write_text(yaml.safe_dump(persistable(as_dict(best)), sort_keys=False))
        outputs["best_config_yaml"] = str(out / "best_config.yaml")
    plots.plot_best_by_preset(records, out / "best_by_preset.png", metric=cfg.tune.metric, mode=cfg.tune.mode)
    plots.plot_trial_curves(
        records, out / "trial_curves.png", metric=cfg.tune.metric, max_epochs=cfg.train.epochs
    )
    outputs.update(
        best_by_preset_png=str(out / "best_by_preset.png"), trial_curves_png=str(out / "trial_curves.png")
    )
    statuses = [r.status for r in records]
    summary = {
        "experiment": sweep.experiment_path,
        "trials": len(records),
        **{status: statuses.count(status) for status in ("done", "stopped", "unfinished", "error")},
        # Interrupted while trials ran (Tune had not ended them) or before it had created all of them.
        "interrupted": grid.num_terminated + grid.num_errors < len(grid) or len(grid) < sweep.trials,
        "max_concurrent_trials": concurrent,
        **results.trial_epochs(records, trials=sweep.trials, max_epochs=cfg.train.epochs),
        "best": _best_summary(records[0]) if records and records[0].best is not None else None,
        "decoded": decoded(cfg, records),
        "outputs": outputs,
        "tracking": sweep_tracking(cfg, sweep.experiment_path),
        "records": records,
    }
    parent = finish_sweep_run(cfg, summary["best"])
    if parent is not None:
        summary["tracking"]["mlflow_parent_run_id"] = parent
    shown = json_safe({k: v for k, v in summary.items() if k != "records"})
    (out / "summary.json").write_text(json.dumps(shown, indent=2, allow_nan=False) + "\n")
    return summary


def _record(sweep: Sweep, result: Any) -> results.TrialRecord:
    cfg = sweep.cfg
    frame = result.metrics_dataframe
    rows = frame.to_dict("records") if frame is not None else []
    metrics = result.metrics or {}
    return results.trial_record(
        metrics.get("trial_id") or Path(str(result.path)).name.removeprefix("trial_"),
        result.config or {},
        rows,
        space=sweep.space,
        metric=cfg.tune.metric,
        mode=cfg.tune.mode,
        max_epochs=cfg.train.epochs,
        done=bool(metrics.get("done")),
        error=str(result.error).splitlines()[0] if result.error else None,
        base_preset=cfg.model.preset,
    )


def _best_summary(record: results.TrialRecord) -> dict[str, Any]:
    """What summary.json keeps of the best trial: its record without the history and status."""
    return {k: v for k, v in record.to_dict().items() if k not in ("history", "status", "error")}


def decoded(cfg: Config, records: Sequence[results.TrialRecord] = ()) -> dict[str, int]:
    """Samples decoded from raw shards into the caches the trials read (once, by ``mm-ray preprocess``),
    and by the trials themselves: none when they read model-ready Parquet; when they stream the shards,
    every epoch of every trial decodes its samples again."""
    counts = {"trials": 0}
    if streams(cfg):
        # A trial's ledger counts each sample once however many epochs read it: times the epochs it ran.
        counts["trials"] = sum(
            r.history[-1].get("ingest_samples_read", 0) * r.epochs_run for r in records if r.history
        )
    for split, cache in (("train_cache", cfg.train.cache), ("val_cache", cfg.train.val_cache)):
        if cache:
            counts[split] = Cache.open(cache, cfg.data.storage_options).manifest.samples_read
    return counts


def _num_classes(cfg: Config) -> int:
    from mm_ray.columns import LABEL

    if cfg.task.kind == "regression":  # one output per target
        return max(1, len(cfg.task.targets))
    caches = [Cache.open(c, cfg.data.storage_options) for c in (cfg.train.cache, cfg.train.val_cache) if c]
    known = [c.num_classes for c in caches]
    if all(n is not None for n in known):
        return max(known)  # type: ignore[type-var]
    return 1 + max(int(c.dataset().max(LABEL)) for c in caches)


def _absolute(path: str) -> str:
    # Tune and Train want storage as an absolute local path or a URI.
    return path if "://" in path else str(Path(path).expanduser().resolve())


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A finished (or interrupted) sweep: its plan, summary (``summary.json``) and one record per trial."""

    sweep: Sweep
    summary: dict[str, Any]
    records: list[results.TrialRecord]
    """Best first (``mm_ray.tune.results.rank``)."""

    @property
    def best(self) -> results.TrialRecord | None:
        """The best trial's record (``trial_id``, ``preset``, ``best``, ``params``, ...), None when none scored."""
        first = self.records[0] if self.records else None
        return first if first is not None and first.best is not None else None

    @property
    def interrupted(self) -> bool:
        """True when trials were left unfinished: ``resume_sweep`` continues them."""
        return bool(self.summary["interrupted"])

    @property
    def outputs(self) -> dict[str, str]:
        """Paths of trials.csv/json, best_config.yaml, the plots and summary.json."""
        return self.summary["outputs"]

    def leaderboard(self) -> tuple[list[str], list[list[Any]]]:
        """(headers, rows) of the leaderboard, best first."""
        return results.leaderboard(self.records, self.sweep.space, self.sweep.cfg.tune.metric)


def sweep(
    cfg: Config,
    space: str | SearchSpace | None = None,
    *,
    callbacks: Sequence[Any] = (),
) -> SweepResult:
    """Run the fusion architecture search of ``cfg`` (``space``: a YAML path or a parsed space; default
    ``tune.space``); starts or joins Ray as ``cfg.ray`` says.

    When ``train.cache`` / ``train.val_cache`` do not exist yet and ``data.shards`` / ``data.val_shards`` are
    set, they are preprocessed first, once: trials never decode shards. With no ``train.cache`` at all, every
    trial streams ``data.shards`` through its own ingest pools (one tokenizer trained once for all of them;
    one trial at a time unless ``tune.max_concurrent_trials`` says otherwise). ``callbacks`` are Tune callbacks
    (e.g. ``mm_ray.tune.progress.TrialLog``). Raises ``ConfigError`` naming the key for a bad config or space,
    and when an experiment of that name exists (continue it with ``resume_sweep``).
    """
    init_ray(cfg.ray)
    warn_if_unshared(cfg.tune.storage_path or cfg.output_dir)
    made = ensure_caches(cfg)
    plan = (
        plan_sweep(cfg, space=space) if isinstance(space, SearchSpace) else plan_sweep(cfg, space_path=space)
    )
    if streams(plan.cfg) and not plan.cfg.text.tokenizer:
        plan = _with_shared_tokenizer(plan)
    summary = run_sweep(plan, callbacks=callbacks)
    summary["decoded"]["this_run"] = sum(made.values())
    return SweepResult(plan, {k: v for k, v in summary.items() if k != "records"}, summary["records"])


def _with_shared_tokenizer(plan: Sweep) -> Sweep:
    """Train the tokenizer on the shards once, into the results directory, for every streaming trial: token
    ids index the model's embedding table, so trials (and their checkpoints) must share one."""
    from mm_ray.data.captions import obtain_tokenizer

    cfg = plan.cfg
    path = plan.results_dir / "tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obtain_tokenizer(cfg, list(cfg.data.shards)))
    text = dataclasses.replace(cfg.text, tokenizer=str(path))
    return dataclasses.replace(plan, cfg=dataclasses.replace(cfg, text=text))


def resume_sweep(
    results_dir: str | Path,
    *,
    ray: RayConfig | None = None,
    storage_options: Mapping[str, Any] | None = None,
    builders: Sequence[str] = (),
    plugins: Sequence[str] = (),
) -> SweepResult:
    """Continue the interrupted sweep whose results directory is ``results_dir`` (``<output_dir>/<name>``,
    holding ``sweep.yaml``); its saved config and space are used, but not its ``ray`` section nor its storage
    options: ``ray`` (default: a local Ray, or ``RAY_ADDRESS``) and ``storage_options`` (default: credentials
    from the environment) are the caller's. ``builders``/``plugins``: the ``model.builder`` functions and plug-in
    modalities the caller trusts (see ``load_sweep``)."""
    plan = load_sweep(
        results_dir, ray=ray, storage_options=storage_options, builders=builders, plugins=plugins
    )
    summary = continue_experiment(plan)
    summary["decoded"]["this_run"] = 0
    return SweepResult(plan, {k: v for k, v in summary.items() if k != "records"}, summary["records"])


def ensure_caches(cfg: Config) -> dict[str, int]:
    """Preprocess ``data.shards`` / ``data.val_shards`` into ``train.cache`` / ``train.val_cache`` when those
    do not exist yet; returns the samples decoded now per cache (none when both were there)."""
    from mm_ray.data.build import build_cache

    t, d = cfg.train, cfg.data
    decoded: dict[str, int] = {}
    tokenizer_json = None
    for key, cache, shards in (
        ("train.cache", t.cache, d.shards),
        ("train.val_cache", t.val_cache, d.val_shards),
    ):
        if not cache:
            continue
        if Cache.exists(cache, d.storage_options):
            tokenizer_json = tokenizer_json or Cache.open(cache, d.storage_options).tokenizer_json
            continue
        if not shards:
            raise ConfigError(f"{key}: {cache} is not a preprocessed cache and no shards are set to make it")
        logger.info("preprocessing %d shard spec(s) into %s (once for the whole sweep)", len(shards), cache)
        # The val cache must share the train cache's tokenizer: token ids index one embedding table.
        made = build_cache(cfg, shards, cache, tokenizer_json=tokenizer_json)
        tokenizer_json = tokenizer_json or made.tokenizer_json
        decoded[key] = made.manifest.samples_read
    return decoded

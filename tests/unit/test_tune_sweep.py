"""Planning a sweep without Ray: config checks that fail before any trial, the saved sweep, a trial's config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cachekit import write_manifest

from mm_ray.cli.main import main
from mm_ray.config.load import ConfigError, load_config
from mm_ray.tune.sweep import ensure_caches, load_sweep, plan_sweep, run_sweep, save_sweep
from mm_ray.tune.trainable import trial_config

SPACE = {
    "model.preset": {"choice": ["gated", "low_rank_tensor"]},
    "model.rank": {"randint": [2, 4], "when": {"model.preset": "low_rank_tensor"}},
}


@pytest.fixture
def setup(tmp_path: Path) -> list[str]:
    """Overrides for a plannable sweep: a space file and two directories that look like caches."""
    for split in ("train", "val"):
        write_manifest(tmp_path / split, samples_read=10)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    return [
        "name=s",
        f"output_dir={tmp_path / 'runs'}",
        f"train.cache={tmp_path / 'train'}",
        f"train.val_cache={tmp_path / 'val'}",
        f"tune.space={tmp_path / 'space.yaml'}",
        "train.epochs=3",
        "model.num_classes=4",  # else planning counts the labels with Ray Data
    ]


def test_plan_resolves_paths_and_keeps_the_space(setup: list[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = [o for o in setup if not o.startswith("train.cache")] + ["train.cache=train"]
    sweep = plan_sweep(load_config(None, relative))
    # Trials run in Tune's per-trial directories: the cache path must not depend on the working directory.
    assert sweep.cfg.train.cache == str(tmp_path / "train")
    assert sweep.space.keys == ["model.preset", "model.rank"]
    assert sweep.experiment_path == f"{tmp_path / 'runs'}/s"
    assert load_sweep(save_sweep(sweep).parent).cfg == sweep.cfg


def test_a_grid_multiplies_the_trials_of_random_search_only(setup: list[str], tmp_path: Path) -> None:
    grid = {"model.preset": {"grid": ["gated", "film", "additive"]}, "train.lr": {"loguniform": [1e-3, 1e-2]}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    cfg = load_config(None, [*setup, f"tune.space={tmp_path / 'grid.yaml'}", "tune.num_samples=2"])
    assert plan_sweep(cfg).trials == 6
    # Optuna samples a grid as a choice: num_samples trials in all.
    assert (
        plan_sweep(
            load_config(
                None,
                [
                    *setup,
                    f"tune.space={tmp_path / 'grid.yaml'}",
                    "tune.num_samples=2",
                    "tune.searcher=optuna",
                ],
            )
        ).trials
        == 2
    )
    assert plan_sweep(load_config(None, setup)).trials == 8  # no grid: tune.num_samples (default 8)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tune.space=null", "tune.space: required"),
        ("train.val_cache=null", "tune.metric: val_accuracy needs train.val_cache"),
        ("tune.grace_period=4", "tune.grace_period: must be between 1 and train.epochs (3)"),
        ("train.num_workers=0", "train.num_workers: a trial needs >= 1"),
        ("tune.num_samples=0", "tune.num_samples: must be >= 1"),
        ("tune.reduction_factor=1", "tune.reduction_factor: must be >= 2"),
        ("train.cache=/nowhere", "train.cache: /nowhere is not a preprocessed cache"),
    ],
)
def test_plan_rejects_sweeps_that_cannot_work(setup: list[str], override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        plan_sweep(load_config(None, [*setup, override]))
    assert message in str(err.value)


def test_a_sweep_without_a_cache_streams_shards_and_needs_what_streaming_needs(
    setup: list[str], tmp_path: Path
) -> None:
    no_cache = [o for o in setup if not o.startswith(("train.cache", "train.val_cache", "model.num_classes"))]
    with pytest.raises(ConfigError, match=r"train.cache: set it to a preprocessed cache, or set data.shards"):
        plan_sweep(load_config(None, no_cache))
    streaming = [*no_cache, "data.shards=[train-*.tar]", "data.val_shards=[val-*.tar]"]
    with pytest.raises(ConfigError, match=r"model.num_classes: required when trials stream"):
        plan_sweep(load_config(None, streaming))
    with pytest.raises(ConfigError, match=r"needs train.val_cache or data.val_shards"):
        plan_sweep(load_config(None, [*no_cache, "data.shards=[train-*.tar]", "model.num_classes=4"]))
    sweep = plan_sweep(load_config(None, [*streaming, "model.num_classes=4"]))
    # Trials run in Tune's own working directories: relative shard specs are made absolute.
    assert sweep.cfg.data.shards == [str(Path.cwd() / "train-*.tar")]
    assert sweep.cfg.data.val_shards == [str(Path.cwd() / "val-*.tar")]


def test_an_existing_experiment_is_not_overwritten(setup: list[str]) -> None:
    sweep = plan_sweep(load_config(None, setup))
    Path(sweep.experiment_path).mkdir(parents=True)
    # What Tune writes when an experiment starts; run_sweep refuses before touching Ray.
    Path(sweep.experiment_path, "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    Path(sweep.experiment_path, "tuner.pkl").write_bytes(b"")
    with pytest.raises(ConfigError, match="mm-ray tune --resume s"):
        run_sweep(sweep)


def test_trial_config_applies_only_active_params(setup: list[str]) -> None:
    sweep = plan_sweep(load_config(None, setup))
    base = sweep.cfg
    lrtf = trial_config(base, sweep.space, {"model.preset": "low_rank_tensor", "model.rank": 3}, name="t1")
    assert (lrtf.name, lrtf.model.preset, lrtf.model.rank, lrtf.train.epochs) == (
        "t1",
        "low_rank_tensor",
        3,
        3,
    )
    gated = trial_config(base, sweep.space, {"model.preset": "gated", "model.rank": None}, name="t2")
    assert gated.model.rank == sweep.cfg.model.rank  # the inactive None never reaches the config
    # A sampled value is checked like an override of the user's, naming its key.
    with pytest.raises(ConfigError, match=r"model\.rank: expected an integer, got 'three'"):
        trial_config(base, sweep.space, {"model.preset": "low_rank_tensor", "model.rank": "three"}, name="t3")


def test_resume_takes_no_new_settings_and_caches_need_a_source(tmp_path: Path, capsys) -> None:
    assert main(["tune", "--resume", "somewhere", "tune.num_samples=4"]) == 2
    assert "drop --space and overrides" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"train.cache: .* no shards are set"):
        ensure_caches(load_config(None, [f"train.cache={tmp_path / 'missing'}"]))


def test_asha_lets_every_trial_train_all_its_epochs_and_cuts_laggards_at_the_rungs(setup: list[str]) -> None:
    """The scheduler the sweep hands Tune, driven with results as Tune would: with train.epochs=4,
    grace_period=1 and reduction_factor=2 the rungs are epochs 1, 2 and 4 (1 x 2^k); a trial reporting the
    best accuracy continues through epoch 4, and a trial that trails at a rung stops there."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from mm_ray.tune.sweep import _scheduler

    cfg = load_config(None, [*setup, "train.epochs=4", "tune.grace_period=1", "tune.reduction_factor=2"])
    asha = _scheduler(cfg)
    asha.set_search_properties(metric="val_accuracy", mode="max")
    good, bad = SimpleNamespace(trial_id="good"), SimpleNamespace(trial_id="bad")
    for trial in (good, bad):
        asha.on_trial_add(None, trial)
    decisions = [asha.on_trial_result(None, good, {"epoch": e, "val_accuracy": 0.9}) for e in (1, 2, 3, 4)]
    assert decisions == [TrialScheduler.CONTINUE] * 4  # the last epoch included: no cut at max_t
    assert asha.on_trial_result(None, bad, {"epoch": 1, "val_accuracy": 0.1}) == TrialScheduler.STOP
    # Nothing runs past train.epochs: a result beyond it ends the trial.
    assert asha.on_trial_result(None, good, {"epoch": 5, "val_accuracy": 0.9}) == TrialScheduler.STOP

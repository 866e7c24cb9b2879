"""How many trials run at once: the scarcest of CPUs (after Ray Data's share) and GPUs decides."""

from __future__ import annotations

import pytest

from mm_ray.config.load import ConfigError, load_config
from mm_ray.tune.resources import TrialResources, concurrency, max_concurrent_trials


def test_a_two_cpu_laptop_runs_one_trial_at_a_time() -> None:
    trial = TrialResources(driver_cpus=0.25, workers=1, cpus_per_worker=0.5, gpus_per_worker=0)
    # 2 CPUs - 1 for Ray Data = 1 CPU for trials of 0.75 CPU each.
    assert max_concurrent_trials(trial, cpus=2, gpus=0, data_cpus=1) == 1
    assert max_concurrent_trials(trial, cpus=16, gpus=0, data_cpus=1) == 20  # floor(15 / 0.75)


def test_gpus_bound_gpu_trials() -> None:
    trial = TrialResources(driver_cpus=1, workers=2, cpus_per_worker=4, gpus_per_worker=1)
    # 4 nodes x (8 GPUs, 64 CPUs): CPUs would allow floor(240 / 9) = 26, GPUs only 32 / 2 = 16.
    assert max_concurrent_trials(trial, cpus=256, gpus=32, data_cpus=16) == 16
    # And CPUs bind when the workers want many of them.
    hungry = TrialResources(driver_cpus=1, workers=2, cpus_per_worker=30, gpus_per_worker=1)
    assert max_concurrent_trials(hungry, cpus=256, gpus=32, data_cpus=16) == 3


def test_exact_fractional_fits_are_not_lost_to_rounding() -> None:
    # 3 x 0.1 + 0.3 is not exactly 0.6 in binary floating point; 6 trials of 0.1 + 3 x 0.1 fit 3.6 CPUs.
    trial = TrialResources(driver_cpus=0.1, workers=3, cpus_per_worker=0.1, gpus_per_worker=0)
    assert max_concurrent_trials(trial, cpus=3.4, gpus=0, data_cpus=1) == 6


def test_a_trial_that_cannot_fit_fails_with_the_keys_to_change() -> None:
    trial = TrialResources(driver_cpus=0.25, workers=2, cpus_per_worker=1, gpus_per_worker=0)
    with pytest.raises(ConfigError, match=r"needs 2\.25 CPUs.*tune\.data_cpus"):
        max_concurrent_trials(trial, cpus=2, gpus=0, data_cpus=1)
    gpu_trial = TrialResources(driver_cpus=0.25, workers=2, cpus_per_worker=0.5, gpus_per_worker=1)
    with pytest.raises(ConfigError, match="2 GPUs"):
        max_concurrent_trials(gpu_trial, cpus=64, gpus=1, data_cpus=1)


def test_concurrency_from_config() -> None:
    cfg = load_config(None, ["train.num_workers=2", "train.cpus_per_worker=0.5", "tune.num_samples=3"])
    assert TrialResources.from_config(cfg).cpus == 1.25
    # Derived: floor(7 / 1.25) = 5, but never more than the trials there are.
    assert concurrency(cfg, cpus=8, gpus=0) == 3
    assert concurrency(cfg, cpus=8, gpus=0, trials=12) == 5  # a grid multiplies the trials
    pinned = load_config(None, ["tune.max_concurrent_trials=2"])
    assert concurrency(pinned, cpus=2, gpus=0) == 2
    with pytest.raises(ConfigError, match=r"tune\.max_concurrent_trials"):
        concurrency(load_config(None, ["tune.max_concurrent_trials=0"]), cpus=2, gpus=0)
    gpu = load_config(None, ["train.use_gpu=true", "train.num_workers=1", "tune.num_samples=64"])
    assert TrialResources.from_config(gpu).gpus == 1
    assert concurrency(gpu, cpus=64, gpus=4) == 4


def test_custom_worker_resources_bound_the_trials_and_a_missing_one_is_named() -> None:
    pinned = TrialResources(1.0, 2, 1.0, 1.0, {"train_gpu": 0.5})
    # 8 GPUs would fit 4 trials; the GPU nodes' markers (2 nodes x 1) fit 2 trials of 2 x 0.5.
    assert max_concurrent_trials(pinned, cpus=64, gpus=8, data_cpus=2, custom={"train_gpu": 2.0}) == 2
    with pytest.raises(ConfigError, match=r"train\.worker_resources: .* 'train_gpu', the cluster declares 0"):
        max_concurrent_trials(pinned, cpus=64, gpus=8, data_cpus=2, custom={})

"""The Tune function trainable: one trial = one Ray Train run (Ray 2.60's Train-inside-Tune pattern).

    trainable = ray.tune.with_parameters(train_trial, base=cfg, space=space, storage=".../exp/train")
    ray.tune.Tuner(ray.tune.with_resources(trainable, {"CPU": 0.25}), param_space=...)

Each trial's sampled parameters (dotted keys, the search space's) are laid over the sweep's base config
(``trial_config``), and the trial builds the same ``TorchTrainer`` as ``mm-ray train``
(``mm_ray.train.ray_trainer.build_trainer``) with two differences:

- the run is named after the trial id, under the experiment's storage: a trial that Tune restarts (after a
  crash, or ``mm-ray tune --resume``) reuses the name, so Ray Train resumes it from its last checkpoint;
- ``TuneReportCallback`` forwards every epoch's metrics (and the checkpoint path) from Train to Tune, so
  ASHA sees each epoch and can stop the trial between epochs. Without it Tune would only see the end.
  (The metrics carry the workers' placement group, so that the driver can give back the workers of a run
  whose trial it stopped: ``mm_ray.tune.cleanup``.)

Inside this function use ``ray.tune.*`` (report, get_context); ``ray.train.*`` belongs to the Train workers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mm_ray.config.load import with_keys
from mm_ray.config.schema import Config
from mm_ray.tune.space import SearchSpace


def trial_config(base: Config, space: SearchSpace, params: Mapping[str, Any], name: str) -> Config:
    """The config of one trial: the sweep's config ``base`` with the trial's active parameters (dotted keys) set,
    each checked like an override, named ``name``."""
    return with_keys(base, {**space.active(params), "name": name})


def train_trial(params: dict[str, Any], *, base: Config, space: SearchSpace, storage: str) -> None:
    """Tune function trainable: train the trial's config with Ray Train; metrics reach Tune per epoch."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from mm_ray.train.ray_trainer import build_trainer

    # Deterministic run name: the trial id is kept across restores, timestamps would not be.
    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(base, space, params, name=trial_id)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, storage_path=storage))
    result = build_trainer(cfg, callbacks=[TuneReportCallback()]).fit()
    if result.error is not None:
        raise result.error

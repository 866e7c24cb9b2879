"""One line per trial event on the ``mm_ray`` logger (INFO), instead of Tune's periodic status tables (the sweep
runs with ``verbose=0``); ``mm-ray tune`` shows them, a Python caller turns on logging to see them.

    ray.tune.RunConfig(verbose=0, callbacks=[TrialLog(space, metric="val_accuracy", max_epochs=4)])

    trial 5f3a2_00001 started: preset=gated width=16 lr=0.00121
    trial 5f3a2_00001 epoch 1/4: val_accuracy 0.3120
    trial 5f3a2_00001 stopped early after 1/4 epochs: val_accuracy 0.312
    trial 5f3a2_00000 done after 4/4 epochs: val_accuracy 0.581

Tune saves the run's callbacks with the experiment, so a resumed sweep logs the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback

from mm_ray.tune.results import short_key
from mm_ray.tune.space import SearchSpace

logger = logging.getLogger(__name__)


class TrialLog(Callback):
    """Logs when a trial starts (with its active parameters), ends an epoch, finishes, is stopped early or fails."""

    def __init__(self, space: SearchSpace, *, metric: str, max_epochs: int) -> None:
        self.space, self.metric, self.max_epochs = space, metric, max_epochs

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = " ".join(f"{short_key(k)}={_show(v)}" for k, v in self.space.active(trial.config).items())
        logger.info("trial %s started: %s", trial.trial_id, params)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
        logger.info(
            "trial %s epoch %s/%d: %s %s",
            trial.trial_id,
            result.get("epoch", "?"),
            self.max_epochs,
            self.metric,
            shown,
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        epochs = int(result.get("epoch", 0))
        how = "done" if epochs >= self.max_epochs else "stopped early"
        value = result.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
        logger.info(
            "trial %s %s after %d/%d epochs: %s %s",
            trial.trial_id,
            how,
            epochs,
            self.max_epochs,
            self.metric,
            shown,
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        logger.warning("trial %s failed (see %s/error.txt)", trial.trial_id, trial.path)


def _show(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)

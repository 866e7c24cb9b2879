"""Giving back the CPUs/GPUs of Train runs whose trial Tune stopped early (ASHA) or lost.

Why this exists: Tune stops a trial by ending its actor, and the trial's Ray Train controller (owned by that
actor) dies with it before it can remove its worker group's placement group. Ray Train leaves that to a
detached ``PlacementGroupCleaner``, which asks the Ray State API (the dashboard) whether the controller is
alive; without a dashboard (a local Ray started by ``mm_ray.runtime.init_ray``, or no ``ray[default]``) it
never gets an answer and the group stays reserved. Each stopped trial then keeps its workers' CPUs, the next
trial's Ray Data read tasks find no free CPU, and the sweep stalls.

The fix, in two halves:

- in the Train controller, ``PlacementGroupProbe`` notes the worker group's placement group and
  ``ReportToTune`` (a ``TuneReportCallback``) adds its id to every result sent to Tune;
- in the Tune driver, ``ReleaseStoppedRuns`` remembers each trial's group and removes it once the trial has
  ended and its actor had time to go (a group that the run removed itself is left alone).

    trainer = build_trainer(cfg, callbacks=trial_callbacks())   # in the trial
    ray.tune.RunConfig(callbacks=[ReleaseStoppedRuns(), ...])     # in the driver
"""

from __future__ import annotations

import time
from typing import Any

import ray.tune
from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.tune.integration.ray_train import TuneReportCallback

PLACEMENT_GROUP_KEY = "train_placement_group"
"""Result key carrying the hex id of the trial's Train worker placement group."""

RELEASE_AFTER_S = 5.0
"""Seconds between a trial's end and removing its group: by then Tune has ended the trial's actor, so its
controller cannot restart workers in a fresh group that nobody would remove."""


class PlacementGroupProbe(WorkerGroupCallback):
    """Train controller callback: remembers the id of the worker group's placement group.

    Ray Train passes RunConfig callbacks that are not ``UserCallback`` to its controller as they are (its
    documented way to build on the internal callback types); this one only reads the group.
    """

    def __init__(self) -> None:
        self.placement_group_id: str | None = None

    def after_worker_group_start(self, worker_group: Any) -> None:
        handle = worker_group.get_worker_group_state().placement_group_handle
        self.placement_group_id = handle.placement_group.id.hex()


class ReportToTune(TuneReportCallback):
    """``TuneReportCallback`` whose results also carry the run's placement group id."""

    def __init__(self, probe: PlacementGroupProbe) -> None:
        super().__init__()
        # The probe and this callback travel to the controller in one pickle, so they stay one object pair.
        self.probe = probe

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        tagged = [{**m, PLACEMENT_GROUP_KEY: self.probe.placement_group_id} for m in metrics]
        super().after_report(run_context, tagged, checkpoint)


def trial_callbacks() -> list[Any]:
    """The Train callbacks of a trial's run: report every epoch to Tune, tagged with the worker group."""
    probe = PlacementGroupProbe()
    return [ReportToTune(probe), probe]


class ReleaseStoppedRuns(ray.tune.Callback):
    """Tune driver callback: removes the placement group of every ended trial's Train run, if still there."""

    def __init__(self) -> None:
        self._groups: dict[str, str] = {}
        self._ended: list[tuple[float, str]] = []

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(PLACEMENT_GROUP_KEY):
            self._groups[trial.trial_id] = result[PLACEMENT_GROUP_KEY]

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended_now(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended_now(trial.trial_id)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._release(time.monotonic())

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._ended:
            time.sleep(max(0.0, self._ended[-1][0] - time.monotonic()))
        self._release(float("inf"))

    def _ended_now(self, trial_id: str) -> None:
        group = self._groups.pop(trial_id, None)
        if group:
            self._ended.append((time.monotonic() + RELEASE_AFTER_S, group))

    def _release(self, now: float) -> None:
        due = [group for when, group in self._ended if when <= now]
        self._ended = [(when, group) for when, group in self._ended if when > now]
        for group in due:
            remove_if_present(group)


def remove_if_present(group_id: str) -> bool:
    """Remove placement group ``group_id`` (hex) unless it is gone already; returns whether it was removed."""
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    group = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id)))
    if placement_group_table(group).get("state", "REMOVED") == "REMOVED":
        return False
    remove_placement_group(group)
    return True

"""Giving back the CPUs/GPUs of Train runs whose trial Tune stopped early (ASHA) or lost.

Ray offers no public API for this (upstream: ray-project/ray#54305, "Broken resource sharing among Tune
trials" with Train V2; its fix, ray-project/ray#58515, relies on the dashboard). Tune stops a trial by ending
its actor, and the trial's Ray Train controller (owned by that actor) dies with it before it can remove its
worker group's placement group. Ray Train leaves that to a detached ``PlacementGroupCleaner``, which asks the
Ray State API (the dashboard) whether the controller is alive; without a dashboard (a local Ray started by
``mm_ray.runtime.init_ray``) it never gets an answer and the group stays reserved. Each stopped trial then
keeps its workers' CPUs, the next trial's Ray Data read tasks find no free CPU, and the sweep stalls.

The workaround, with public APIs only:

- every Train worker reports the id of the placement group it runs in
  (``ray.util.get_current_placement_group()``) as the metric ``train_placement_group``
  (``mm_ray.train.worker``), which ``TuneReportCallback`` forwards to Tune like any metric;
- in the Tune driver, ``ReleaseStoppedRuns`` remembers each trial's group and removes it
  (``ray.util.remove_placement_group``) once the trial has ended and its actor had time to go; a group that
  the run removed itself is left alone.

    ray.tune.RunConfig(callbacks=[ReleaseStoppedRuns(), ...])     # in the driver

``tests/integration/test_tune.py`` runs a sweep in which ASHA stops trials and checks that no placement
group is left behind: it fails if this workaround stops working (or becomes unnecessary).
"""

from __future__ import annotations

import time
from typing import Any

import ray
import ray.tune
from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

from mm_ray.train.worker import PLACEMENT_GROUP_METRIC

RELEASE_AFTER_S = 5.0
"""Seconds between a trial's end and removing its group: by then Tune has ended the trial's actor, so its
controller cannot restart workers in a fresh group that nobody would remove."""


class ReleaseStoppedRuns(ray.tune.Callback):
    """Tune driver callback: removes the placement group of every ended trial's Train run, if still there."""

    def __init__(self) -> None:
        self._groups: dict[str, str] = {}
        self._ended: list[tuple[float, str]] = []

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(PLACEMENT_GROUP_METRIC):
            self._groups[trial.trial_id] = result[PLACEMENT_GROUP_METRIC]

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
    group = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id)))
    if placement_group_table(group).get("state", "REMOVED") == "REMOVED":
        return False
    remove_placement_group(group)
    return True

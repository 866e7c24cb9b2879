"""What a Train worker does after every optimizer step: note the samples the step trained, append them to the
sample log, take a step checkpoint every ``train.checkpoint_every_steps``, and run the step fault drill.

    hook = StepHook(loop, epoch=e, tracker=PositionTracker(e, restored), scheduler=scheduler, rank=rank,
                    attempt_step=scheduler.last_epoch, save=save_step)
    loop_epoch(..., on_step=hook)          # hook(steps_in_epoch, step_batches, running) after each step

``save(position)`` is called on every rank with the epoch's position gathered over all ranks (the Train
worker writes and reports the checkpoint). No Ray here: the caller brings it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mm_ray.data.sample_ids import SAMPLE_ID
from mm_ray.train.position import DataPosition, PositionTracker
from mm_ray.train.spec import LoopConfig

SUM_KEYS = ("samples", "loss_sum", "correct")


class StepHook:
    """``on_step`` of ``loop_epoch`` in a Train worker (module docstring)."""

    def __init__(
        self,
        loop: LoopConfig,
        *,
        epoch: int,
        tracker: PositionTracker,
        scheduler: Any,
        rank: int,
        attempt_step: int,
        save: Callable[[DataPosition], None],
        good_samples: Callable[[], Mapping[str, int]] | None = None,
        started: float | None = None,
    ) -> None:
        self.loop = loop
        self.epoch = epoch
        self.tracker = tracker
        self.scheduler = scheduler
        self.rank = rank
        self.attempt_step = attempt_step
        self.save = save
        self.good_samples = good_samples
        self.started = time.perf_counter() if started is None else started
        self.checkpoints = 0
        self.checkpoint_seconds = 0.0
        """Step checkpoints taken this epoch and the wall seconds they cost this rank (gathering, writing,
        reporting): the epoch's metrics carry them, ``mm-ray bench train --modes eager,ckpt200`` sums them."""

    def __call__(self, steps_in_epoch: int, batches: list[Mapping[str, Any]], running: Callable) -> None:
        self.tracker.add(batches)
        global_step = int(self.scheduler.last_epoch)  # the scheduler steps once per optimizer step
        if self.loop.sample_log:
            self._log(global_step, batches)
        every = self.loop.checkpoint_every_steps
        if every and global_step % every == 0:
            began = time.perf_counter()
            self.save(self.position(global_step, steps_in_epoch, running()))
            self.checkpoints += 1
            self.checkpoint_seconds += time.perf_counter() - began
        # Once, in the attempt that started from scratch: the restarted one passes the step.
        if self.loop.fail_at_step and global_step == self.loop.fail_at_step and self.attempt_step == 0:
            fault_drill(self.rank, f"step {global_step}")

    def position(self, global_step: int, steps_in_epoch: int, local: Mapping[str, float]) -> DataPosition:
        """The epoch's position over every rank (collective): trained ids, finished shards, summed stats."""
        sums = torch.tensor([local[k] for k in SUM_KEYS], dtype=torch.float64)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            sums = sums.to(device)
            dist.all_reduce(sums)
        totals = dict(zip(SUM_KEYS, sums.tolist(), strict=True))
        restored = self.tracker.restored
        if restored is not None:
            totals = {k: totals[k] + float(restored.sums.get(k, 0.0)) for k in SUM_KEYS}
        totals["seconds"] = (
            time.perf_counter()
            - self.started
            + (float(restored.sums.get("seconds", 0.0)) if restored is not None else 0.0)
        )
        good = self.good_samples() if self.good_samples is not None else None
        return self.tracker.gather(
            global_step=global_step, steps_in_epoch=steps_in_epoch, sums=totals, good_samples=good
        )

    def _log(self, global_step: int, batches: list[Mapping[str, Any]]) -> None:
        ids = [int(i) for b in batches if SAMPLE_ID in b for i in np.asarray(b[SAMPLE_ID]).reshape(-1)]
        line = {
            "rank": self.rank,
            "epoch": self.epoch,
            "global_step": global_step,
            "attempt_step": self.attempt_step,
            "ids": ids,
        }
        path = Path(self.loop.sample_log) / f"rank{self.rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(line) + "\n")


def fault_drill(rank: int, where: str) -> None:
    """Rank 0's process dies here, as on a crashed node (``train.fail_at_epoch`` / ``fail_at_step``).

    Ray Train's controller collects reports every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s): a process that
    dies sooner after report() loses that checkpoint, as a real crash would. Waiting three intervals lets the
    last checkpoint register, so the drill always tests the restart from it. Other ranks go on (and block in
    their next collective until Ray Train tears the group down)."""
    if rank != 0:
        return
    time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)))
    print(f"fault drill: rank 0 exits at {where}", flush=True)
    os._exit(1)

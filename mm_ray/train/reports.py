"""What the Ray Train workers report: each epoch's metrics with a checkpoint, and the step checkpoints.

    report_epoch(metrics, history, model, optimizer, scheduler, scaler, config, position)   # every rank
    report_step(position, model, optimizer, scheduler, scaler, config, history)            # every rank

Every rank gathers the full model and optimizer states (FSDP: collective) and its RNG states; rank 0 writes
the checkpoint (``mm_ray.train.checkpoint``: with the data position, ``position.pt`` beside it) and attaches
it to its report; the others report the metrics alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import ray.train
import torch.distributed as dist

from mm_ray.train.checkpoint import TOKENIZER_FILE, save_checkpoint
from mm_ray.train.parallel import full_states
from mm_ray.train.position import DataPosition, rng_state


def checkpoint_state(model, optimizer, scaler, position: DataPosition) -> dict[str, Any]:
    """The full model and optimizer states and every rank's RNG states (collective: all ranks call it)."""
    gathered: list[Any] = [rng_state()]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, rng_state())
    extra = {
        "position": position.to_state(),
        "rng": gathered,
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    return {"states": full_states(model, optimizer), "extra": extra}


def write_and_report(
    metrics: dict[str, Any], history, model, optimizer, scheduler, scaler, config, position: DataPosition
) -> None:
    """Every rank reports; only rank 0 attaches a checkpoint (the full states, gathered from every rank).

    The checkpoint is self-contained for ``mm-ray evaluate``: the loop config (its resolved config included)
    is in its state and the tokenizer sits beside it as ``tokenizer.json``.
    """
    saved = checkpoint_state(model, optimizer, scaler, position)
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(
            tmp,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            epoch=position.epoch if position.steps_in_epoch else metrics["epoch"],
            config=config["loop"].to_state(),
            metrics=metrics,
            history=history,
            states=saved["states"],
            extra=saved["extra"],
        )
        Path(tmp, TOKENIZER_FILE).write_text(config["tokenizer_json"])
        # report() copies the directory to run storage before returning, so the temp dir can go.
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def report_epoch(
    metrics, history, model, optimizer, scheduler, scaler, config, position: DataPosition
) -> None:
    """The epoch's metrics and checkpoint (an epoch-end position: the next epoch starts fresh)."""
    write_and_report(metrics, history, model, optimizer, scheduler, scaler, config, position)


STEP_REPORT = "step_checkpoint"
"""Metric marking a step checkpoint's report: it has no ``epoch`` (the driver's per-epoch relay, the best
checkpoint's choice and Tune see only epoch reports), only where it stands."""


def report_step(position: DataPosition, model, optimizer, scheduler, scaler, config, history) -> None:
    """A step checkpoint (``train.checkpoint_every_steps``): the states, the RNGs and the data position."""
    metrics = {
        STEP_REPORT: 1,
        "step": position.global_step,
        "epoch_in_progress": position.epoch + 1,
        "steps_in_epoch": position.steps_in_epoch,
    }
    write_and_report(metrics, history, model, optimizer, scheduler, scaler, config, position)

"""Training checkpoints as plain directories: one ``torch.save`` file holding every piece of state.

    save_checkpoint(ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler, epoch=3, config=cfg_dict)
    state = load_checkpoint(ckpt_dir)   # {"model", "optimizer", "scheduler", "epoch", "config", "metrics",
                                        #  "history", "format"}
    restore_into(state, model=model, optimizer=optimizer, scheduler=scheduler)

``epoch`` is the number of epochs *finished*, so a resumed run starts at that epoch index. The model's
state dict is taken from the unwrapped module (``DistributedDataParallel.module``), so its keys never
carry a ``module.`` prefix and a checkpoint loads into a bare model as well as into a wrapped one.
Pure PyTorch: the Ray Train adapter wraps the directory in a ``ray.train.Checkpoint``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
TOKENIZER_FILE = "tokenizer.json"
"""Written beside the state by the Ray Train adapter, so a checkpoint can tokenize new shards itself."""
FORMAT = 1
"""Bumped when the layout of the saved dict changes incompatibly."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP/FSDP-style wrapper (anything with ``.module``), else ``model`` itself."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def save_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    epoch: int,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the training state into ``directory`` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        # Every finished epoch's metrics: a resumed run's curves and metrics file start from epoch 1.
        "history": list(history or []),
    }
    # Write then rename: a crash mid-write must not leave a truncated file that looks like a checkpoint.
    tmp = directory / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(directory / STATE_FILE)
    return directory


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict written by ``save_checkpoint``; tensors are loaded onto ``map_location``."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not an mm_ray checkpoint (no {STATE_FILE})")
    # weights_only: the file holds only tensors and plain containers, so nothing is unpickled blindly.
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r}, this code reads {FORMAT}")
    return state


def restore_into(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> int:
    """Load ``state`` into the given objects; returns the number of finished epochs to resume after."""
    unwrap(model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"])

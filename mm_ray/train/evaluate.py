"""Score a trained checkpoint on any shard set, per modality subset, through the real preprocessing pipeline.

Usage (``mm-ray evaluate CHECKPOINT SHARDS...`` is the command-line form)::

    from mm_ray.train.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint("runs/demo", ["shards/val-*.tar"], overrides=["pools.image.num_cpus=0.5"])
    result["checkpoint"]                 # the checkpoint used: a run directory means its latest one
    result["subsets"]["image+audio"]     # {"accuracy": 0.81, "loss": 0.52, "samples": 400}

A checkpoint written by ``mm_ray.train.ray_trainer`` is self-contained: its state holds the weights, the
preset with its model arguments, and the run's resolved config (image size, tokenizer length, mel settings,
member mapping ...); ``tokenizer.json`` sits beside it. The shards go through the same per-modality actor
pools as ``mm-ray preprocess`` with those settings, so a checkpoint scores new shards exactly as its
training run scored its validation cache. ``overrides`` (dotted ``key=value``) and a YAML ``config_file``
are laid over the saved config: meant for the cluster at hand (``pools.*``, ``ray.*``, ``data.*``). An
input size the model was not trained on (``image.size``, ``text.max_length``, the audio feature rows) is refused
with a ``ConfigError`` naming the key.

``checkpoint_dir`` may also be a run directory (``<storage>/<name>``, Ray Train's ``checkpoint_<timestamp>``
directories inside): the checkpoint with the most finished epochs is used (the later name on a tie).

Memory: ``evaluate_subsets`` scores every subset on each batch in one pass, so batches are consumed as they
stream out of the pipeline and nothing is collected; memory stays at Ray Data's in-flight limit
(``data.memory_limit_mb``) plus one batch per subset, however large the shard set.

Starts a local Ray or joins ``ray.address`` (a running Ray is reused).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mm_ray.config.load import ConfigError, config_from_dict
from mm_ray.config.schema import Config
from mm_ray.data.cache import audio_feature_rows
from mm_ray.data.pipeline import Ingest
from mm_ray.data.sources import ShardSpecError
from mm_ray.models import build_model
from mm_ray.runtime import init_ray
from mm_ray.train.checkpoint import STATE_FILE, TOKENIZER_FILE, load_checkpoint
from mm_ray.train.ensemble import PredictionAverage, check_compatible
from mm_ray.train.metrics import SUBSETS, evaluate_subsets

CHECKPOINT_GLOB = "checkpoint_*"
"""How Ray Train names the checkpoint directories inside a run directory."""

FULL_SUBSET = SUBSETS[-1]


# The config keys that set the model's input shapes, and the model argument each must equal.
def input_shapes(cfg: Config) -> dict[str, tuple[str, int]]:
    """Model argument -> (the config keys that set it, its value under ``cfg``): what a checkpoint must match."""
    a = cfg.audio
    audio_keys = "audio.n_mels" if a.features == "log_mel" else "audio.features/n_mfcc/deltas"
    return {
        "image_size": ("image.size", cfg.image.size),
        "max_text_len": ("text.max_length", cfg.text.max_length),
        "n_mels": (audio_keys, audio_feature_rows(a)),
    }


class CheckpointError(ValueError):
    """A path is not a usable mm_ray checkpoint (nor a run directory holding one); the message names it."""


@dataclasses.dataclass
class LoadedCheckpoint:
    """A checkpoint's state (weights, epoch, loop config, metrics), its tokenizer, and where it came from."""

    directory: Path
    state: dict[str, Any]
    tokenizer_json: str
    picked_from: Path | None = None
    """The run directory it was chosen from, when a run directory was given."""


def open_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Load the checkpoint at ``path``, or the latest checkpoint of the run directory ``path``."""
    path = Path(path)
    picked_from = None
    if (path / STATE_FILE).is_file():
        directory, state = path, _load(path)
    else:
        directory, state = latest_checkpoint(path)
        picked_from = path
    tokenizer = directory / TOKENIZER_FILE
    if not tokenizer.is_file():
        raise CheckpointError(
            f"{directory}: no {TOKENIZER_FILE} beside {STATE_FILE}; it cannot tokenize shards"
        )
    if "resolved" not in state["config"]:
        raise CheckpointError(
            f"{directory}: its state has no resolved config to rebuild the preprocessing from"
        )
    # Evaluation needs neither: the Adam moments alone are twice the model's size.
    state = {k: v for k, v in state.items() if k not in ("optimizer", "scheduler")}
    return LoadedCheckpoint(directory, state, tokenizer.read_text(), picked_from)


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The ``checkpoint_*`` directory of ``run_dir`` with the most finished epochs, and its state.

    Chosen by the epoch saved inside, not by name: names are timestamps, and a clock or a copied
    directory can disagree with the training order. States are loaded one at a time.
    """
    run_dir = Path(run_dir)
    candidates = sorted(p for p in run_dir.glob(CHECKPOINT_GLOB) if (p / STATE_FILE).is_file())
    if not candidates:
        raise CheckpointError(
            f"{run_dir} is not an mm_ray checkpoint (no {STATE_FILE}) "
            f"nor a run directory holding {CHECKPOINT_GLOB} checkpoints"
        )
    best: tuple[Path, dict[str, Any]] | None = None
    for directory in candidates:
        state = _load(directory)
        # >=: on a tie the later name (the later timestamp) wins.
        if best is None or state["epoch"] >= best[1]["epoch"]:
            best = (directory, state)
    assert best is not None
    return best


def _load(directory: Path) -> dict[str, Any]:
    try:
        return load_checkpoint(directory)
    except (OSError, ValueError, RuntimeError) as err:  # torch raises RuntimeError on a damaged file
        raise CheckpointError(f"{directory}: cannot read the checkpoint: {err}") from err


def checkpoint_config(
    state: dict[str, Any], overrides: Sequence[str] = (), *, config_file: str | Path | None = None
) -> Config:
    """The run's resolved config saved in ``state``, with ``config_file`` and ``overrides`` laid over it."""
    cfg = config_from_dict(state["config"]["resolved"], overrides, path=config_file)
    model_kwargs = state["config"]["model_kwargs"]
    for argument, (key, value) in input_shapes(cfg).items():
        trained = model_kwargs[argument]
        if value != trained:
            # Also catches a run trained on a cache preprocessed with other settings than its own config.
            if "/" in key:  # several keys set the size (MFCC rows): name the sizes, not one key's value
                got, fix = f"{value} audio feature rows", f"the training cache's {key}"
            else:
                got, fix = str(value), f"{key}={trained}"
            raise ConfigError(
                f"{key}: {got}, but the checkpoint's model was trained on inputs of size {trained}; "
                f"pass {fix} (and match the rest of the training cache's preprocessing)"
            )
    return cfg


def restore_model(state: dict[str, Any], device: str | torch.device = "cpu") -> torch.nn.Module:
    """The checkpoint's model rebuilt from its preset and arguments, weights loaded, in eval mode."""
    loop = state["config"]
    model = build_model(loop["preset"], **loop["model_kwargs"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _presets(checkpoints: Sequence[LoadedCheckpoint]) -> list[str]:
    return [c.state["config"]["preset"] for c in checkpoints]


def open_for_shards(
    checkpoint: str | Path,
    specs: str | Sequence[str],
    overrides: Sequence[str],
    config_file: str | Path | None,
    *,
    purpose: str,
) -> tuple[LoadedCheckpoint, Config, list[str]]:
    """The checkpoint, its config with ``config_file``/``overrides`` over it, and the shard specs to run it on
    (``specs``, else the config's ``data.val_shards``; ``ShardSpecError`` naming ``purpose`` when neither)."""
    ckpt = open_checkpoint(checkpoint)
    cfg = checkpoint_config(ckpt.state, overrides, config_file=config_file)
    specs = [specs] if isinstance(specs, str) else list(specs or cfg.data.val_shards)
    if not specs:
        raise ShardSpecError(f"no shards to {purpose}: pass shard specs or set data.val_shards")
    return ckpt, cfg, specs


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    specs: str | Sequence[str],
    *,
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    quarantine_log: str | Path | None = None,
    progress: Callable[[Callable[[], int]], contextlib.AbstractContextManager] | None = None,
    ensemble: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Score the checkpoint on the shards ``specs`` (default: the config's ``data.val_shards``).

    ``ensemble``: more checkpoints (or run directories) whose predicted probabilities are averaged with this
    one's (model-level fusion, ``mm_ray.train.ensemble``); they must share its tokenizer and input shapes.

    ``batch_size`` defaults to the training batch size; ``device`` to CUDA when available. ``progress``, if
    given, is entered around the stream with a function returning the samples read so far (a progress bar).
    Raises ``CheckpointError``, ``ConfigError``, ``ShardSpecError``, or ``ErrorBudgetExceeded`` when too
    many samples are quarantined.
    """
    started = time.perf_counter()
    ckpt, cfg, specs = open_for_shards(checkpoint_dir, specs, overrides, config_file, purpose="evaluate on")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = restore_model(ckpt.state, device)
    members = [open_checkpoint(path) for path in ensemble]
    if members:
        check_compatible([ckpt, *members])
        model = PredictionAverage([model, *(restore_model(m.state, device) for m in members)]).to(device)
    loop = ckpt.state["config"]
    # The same autocast as the training run's validation, so the scores are comparable.
    autocast = torch.bfloat16 if loop.get("bf16") and device.type == "cuda" else None
    init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory_mb)
    ingest = Ingest.from_config(cfg, specs, ckpt.tokenizer_json)
    watch = progress(lambda: ingest.summary()["samples_read"]) if progress else contextlib.nullcontext()
    with watch:
        # __key__/__shard__ are strings: to_device (inside evaluate_subsets) drops them.
        batches = ingest.dataset.iter_batches(
            batch_size=batch_size or loop["batch_size"], batch_format="numpy"
        )
        subsets = evaluate_subsets(model, batches, SUBSETS, device=device, autocast_dtype=autocast)
    summary = ingest.finish(quarantine_log=quarantine_log)  # after the stream: the ledger's counts are final
    return {
        "checkpoint": str(ckpt.directory),
        "picked_from": str(ckpt.picked_from) if ckpt.picked_from is not None else None,
        "epoch": int(ckpt.state["epoch"]),
        "preset": loop["preset"] if not members else "ensemble of " + " + ".join(_presets([ckpt, *members])),
        "ensemble": [str(m.directory) for m in members] or None,
        "samples": subsets[FULL_SUBSET]["samples"],
        "quarantined": summary["samples_quarantined"],
        "quarantine_reasons": summary["quarantine_reasons"],
        "shards": summary["shards"],
        "shards_unreadable": summary["shards_unreadable"],
        "pools": summary["pools"],
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 2),
        "subsets": subsets,
    }

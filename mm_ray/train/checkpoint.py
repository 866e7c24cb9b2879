"""Training checkpoints as plain directories: one ``torch.save`` file holding every piece of state.

The one owner of checkpoints: writing, reading, finding a run's latest, restoring::

    save_checkpoint(ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler, epoch=3,
                    config=loop.to_state())
    state = load_checkpoint(ckpt_dir)   # {"model", "optimizer", "scheduler", "epoch", "config", "metrics",
                                        #  "history", "format"}
    restore_into(state, model=model, optimizer=optimizer, scheduler=scheduler)

    ckpt = open_checkpoint("runs/demo/train/late_concat")   # a checkpoint, or a run directory's latest
    ckpt.loop                    # its LoopConfig (mm_ray.train.spec): model spec, resolved config
    model = ckpt.restore_model() # weights loaded, eval mode

A checkpoint is data (downloaded, shared, copied from someone's bucket), never code to run or settings: its model
may be made by a ``model.builder`` function it names, and that is imported only when the caller names the same
function itself. The rule is enforced where a checkpoint is opened: ``open_checkpoint(path, builder=...)`` and
``open_for_shards`` (the caller's own ``model.builder``) refuse a checkpoint naming any other builder, so every
``LoadedCheckpoint`` a caller holds has passed it, and ``restore_model`` checks it again before building.

``epoch`` is the number of epochs *finished*, so a resumed run starts at that epoch index. Model and
optimizer states are full state dicts keyed by parameter name (``mm_ray.train.parallel.full_states``): no
``module.`` or ``_orig_mod.`` prefix, the same file whether the run used DDP, FSDP or one process, so a
checkpoint loads into a bare model as well as into a wrapped or sharded one, under any worker count.

A step checkpoint (``train.checkpoint_every_steps``) also holds ``position`` (``mm_ray.train.position``:
the epoch in progress and the samples it has trained), every rank's RNG states (``rng``) and the fp16 loss
scaler's state (``scaler``); ``position`` is written a second time as ``position.pt`` beside the state, so
the driver side can read where a run stands without loading its weights.
Pure PyTorch: the Ray Train adapter wraps the directory in a ``ray.train.Checkpoint``.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mm_ray.config.load import ConfigError, as_dict, config_from_dict
from mm_ray.config.schema import Config
from mm_ray.data.manifest import model_ready_shapes
from mm_ray.data.sources import ShardSpecError
from mm_ray.modalities.registry import modalities_of, settings_key, settings_of
from mm_ray.train.parallel import full_states, load_full_states
from mm_ray.train.spec import LoopConfig, read_loop_config
from mm_ray.train.wrapping import unwrap

STATE_FILE = "state.pt"
POSITION_FILE = "position.pt"
"""The data position alone (``mm_ray.train.position``), beside the state."""
TOKENIZER_FILE = "tokenizer.json"
"""Written beside the state by the Ray Train adapter, so a checkpoint can tokenize new shards itself."""
FORMAT = 3
"""Bumped when the layout of the saved dict changes. 2: ``config`` holds ``LoopConfig.to_state()``; 3: the
optimizer state is keyed by parameter name (any strategy), and ``position``/``rng``/``scaler`` may be there."""
READABLE_FORMATS = (1, 2, 3)
"""1: ``config`` held the trainer's flat dict (``preset``, ``model_kwargs``, ...); ``read_loop_config`` reads it."""
CHECKPOINT_GLOB = "checkpoint_*"
"""How Ray Train names the checkpoint directories inside a run directory."""


class CheckpointError(ValueError):
    """A path is not a usable mm_ray checkpoint (nor a run directory holding one); the message names it."""


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
    states: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the training state into ``directory`` (created if needed); returns the directory.

    ``states``: the model's and optimizer's full states already gathered (``parallel.full_states``, which
    every rank of an FSDP run must call); None = taken from ``model`` and ``optimizer`` here. ``extra``:
    more top-level entries (``position``, ``rng``, ``scaler``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    states = states or full_states(unwrap(model), optimizer)
    state = {
        "format": FORMAT,
        "model": states["model"],
        "optimizer": states["optimizer"],
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        # Every finished epoch's metrics: a resumed run's curves and metrics file start from epoch 1.
        "history": list(history or []),
        **(extra or {}),
    }
    _atomic_save(state, directory / STATE_FILE)
    if state.get("position") is not None:
        _atomic_save(state["position"], directory / POSITION_FILE)
    return directory


def _atomic_save(obj: Any, path: Path) -> None:
    # Write then rename: a crash mid-write must not leave a truncated file that looks like a checkpoint.
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict written by ``save_checkpoint``; tensors are loaded onto ``map_location``."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not an mm_ray checkpoint (no {STATE_FILE})")
    # weights_only: the file holds only tensors and plain containers, so nothing is unpickled blindly.
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") not in READABLE_FORMATS:
        raise ValueError(
            f"{path}: checkpoint format {state.get('format')!r}, this code reads {list(READABLE_FORMATS)}"
        )
    return state


def restore_into(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> int:
    """Load ``state`` into the given objects (plain, DDP, FSDP or compiled model); returns the number of
    finished epochs to resume after. Checkpoints of formats 1-2 (optimizer state keyed by position) load into
    the model they were made with."""
    optimizer_state = state["optimizer"] if optimizer is not None else None
    if optimizer_state is not None and all(isinstance(k, int) for k in optimizer_state.get("state", {})):
        unwrap(model).load_state_dict(state["model"])  # formats 1-2
        optimizer.load_state_dict(optimizer_state)
    else:
        load_full_states(model, optimizer, state["model"], optimizer_state)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"])


@dataclasses.dataclass
class LoadedCheckpoint:
    """A checkpoint's state (weights, epoch, loop config, metrics), its tokenizer, and where it came from."""

    directory: Path
    state: dict[str, Any]
    tokenizer_json: str
    picked_from: Path | None = None
    """The run directory it was chosen from, when a run directory was given."""
    trusted_builder: str | None = None
    """The ``model.builder`` the caller named itself: the only code this checkpoint's model may be built by."""
    trusted_plugins: tuple[str, ...] = ()
    """The plug-in modalities the caller named itself (``modalities.plugins``): the only ones it may import."""

    @functools.cached_property
    def loop(self) -> LoopConfig:
        """The run's ``LoopConfig`` (read from either checkpoint format)."""
        try:
            return read_loop_config(self.state["config"])
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{self.directory}: its saved run config is unusable: {err}") from None

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    def config(self, overrides: Sequence[str] = (), *, config_file: str | Path | None = None) -> Config:
        """The run's resolved config with ``config_file`` and ``overrides`` laid over it, for scoring new shards.

        A checkpoint is data, not settings: the cluster to join (``ray.*``) and the storage credentials
        (``data.storage_options``) come from the caller (overrides, environment), never from the file. An
        input size the model was not trained on is refused with a ``ConfigError`` naming the key.
        """
        raw = as_dict(self.loop.resolved)
        raw["ray"] = {}
        raw["data"] = {**raw["data"], "storage_options": {}}
        # Code to import is a setting too: the builder named inside the file is dropped here, so the config's
        # model.builder is only ever what the caller passed (``restore_model`` compares the two).
        raw["model"] = {**raw["model"], "builder": None}
        # Plug-in modalities are code as well: only the caller's own are ever imported (``check_plugins``).
        raw["modalities"] = {**raw.get("modalities", {}), "plugins": []}
        cfg = config_from_dict(raw, overrides, path=config_file)
        self.check_plugins(cfg.modalities.plugins)
        check_inputs(cfg, self.loop)
        return cfg

    @property
    def classes(self) -> list[str] | None:
        """The class names of a run trained on string labels (label id = position), the tag names of a
        multilabel run, the target names of a regression run with ``task.targets``; else None."""
        data, task = self.loop.resolved.data, self.loop.resolved.task
        if task.kind == "regression":
            return list(task.targets) or None
        named = data.labels == "names" or task.kind == "multilabel"
        return list(data.classes) if named and data.classes else None

    def restore_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The checkpoint's model rebuilt from its spec, weights loaded, in eval mode.

        The one way a checkpoint becomes a model (``evaluate``, ``embed``, ``--ensemble``, ``generate``): a model
        made by ``model.builder`` is rebuilt by importing and calling the function the checkpoint names, which
        runs that module's code, so it is built only when that is the caller's ``trusted_builder`` (given to
        ``open_checkpoint``); else ``CheckpointError`` says what to pass. Preset models import nothing. Likewise
        the plug-in modalities its model reads are imported only when they are among ``trusted_plugins``.
        """
        self.check_builder(self.trusted_builder)
        self.check_plugins(self.trusted_plugins)
        # Library encoders are rebuilt from the spec's architecture alone: the weights are the checkpoint's.
        model = self.loop.model.build(load_pretrained=False)
        model.load_state_dict(self.state["model"])
        return model.to(device).eval()

    def trust(self, builder: str | None, plugins: Sequence[str]) -> None:
        """Check the caller's own ``builder`` and ``plugins`` against the code the checkpoint names, and remember
        them as the only code ``restore_model`` may import."""
        self.check_builder(builder)
        self.check_plugins(plugins)
        self.trusted_builder, self.trusted_plugins = builder, tuple(plugins)

    def check_builder(self, builder: str | None) -> None:
        """``CheckpointError`` unless the checkpoint's model is a preset or its builder is ``builder``."""
        spec = self.loop.model
        if spec.builder and builder != spec.builder:
            given = f"model.builder={builder}" if builder else "no model.builder"
            raise CheckpointError(
                f"{self.directory}: its model is built by {spec.builder!r}, code named inside the checkpoint; "
                f"it is imported only when you name it yourself ({given} given): pass model.builder={spec.builder} "
                "if you trust that module"
            )

    def check_plugins(self, plugins: Sequence[str]) -> None:
        """``CheckpointError`` unless every plug-in modality the checkpoint's run named is among ``plugins``
        (the caller's own ``modalities.plugins``)."""
        named = [*self.loop.model.plugins, *self.loop.resolved.modalities.plugins]
        foreign = [p for p in dict.fromkeys(named) if p not in plugins]
        if foreign:
            raise CheckpointError(
                f"{self.directory}: its model reads the plug-in modality {foreign[0]!r}, code named inside the "
                f"checkpoint; it is imported only when you name it yourself: pass "
                f"modalities.plugins=[{', '.join(dict.fromkeys(named))}] if you trust it"
            )


def open_checkpoint(
    path: str | Path, *, builder: str | None = None, plugins: Sequence[str] = ()
) -> LoadedCheckpoint:
    """The checkpoint at ``path``, or the latest checkpoint of the run directory ``path``, with its tokenizer.

    ``builder``: the ``model.builder`` the caller trusts (its own setting, never the checkpoint's); ``plugins``:
    the plug-in modalities it trusts (its own ``modalities.plugins``). A checkpoint whose model is built by any
    other code is refused here. The optimizer and scheduler states are dropped (evaluation needs neither: the
    Adam moments alone are twice the model's size). Raises ``CheckpointError`` naming the path.
    """
    loaded = _open_unchecked(path)
    loaded.trust(builder, plugins)
    return loaded


def _open_unchecked(path: str | Path) -> LoadedCheckpoint:
    # Only ``open_checkpoint`` and ``open_for_shards`` call this: both check the builder before handing it out.
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
    state = {k: v for k, v in state.items() if k not in ("optimizer", "scheduler")}
    loaded = LoadedCheckpoint(directory, state, tokenizer.read_text(), picked_from)
    loaded.loop  # noqa: B018 -- read now, so an unusable config fails here, naming the checkpoint
    return loaded


def check_inputs(cfg: Config, loop: LoopConfig) -> None:
    """``ConfigError`` when ``cfg``'s preprocessing makes columns of another shape than the checkpoint's model was
    trained on, naming the settings that differ from the training run's (``loop.resolved``). Also catches a run
    trained on a cache preprocessed with other settings than its own config. Axes the modality lets vary
    (``ModalitySpec.variable_axes``: an audio clip's frames) are not compared."""
    trained = loop.model
    registry = modalities_of(cfg)
    shapes = model_ready_shapes(cfg, registry)
    for name in trained.modalities:
        if name not in registry:
            raise ConfigError(f"data.modalities: the checkpoint's model reads {name!r}; keep it among them")
        spec = registry[name]
        for column in spec.column_names:
            want, got = trained.shapes.get(column), shapes[column]
            free = {axis for name, axis in spec.variable_axes if name == column}
            if want is None or _same_shape(want, got, free):
                continue
            theirs, yours = settings_of(loop.resolved, spec), settings_of(cfg, spec)
            prefix = settings_key(spec.name)
            differ = [
                f.name
                for f in dataclasses.fields(theirs)
                if getattr(theirs, f.name) != getattr(yours, f.name)
            ]
            given = ", ".join(f"{prefix}.{k}: {getattr(yours, k)!r}" for k in differ) or f"{prefix} settings"
            fix = (
                " ".join(f"{prefix}.{k}={getattr(theirs, k)}" for k in differ)
                or f"the training data's {prefix} settings"
            )
            raise ConfigError(
                f"{given} make {column} {list(got)}, but the checkpoint's model was trained on {list(want)}; "
                f"pass {fix} (and match the rest of the training cache's preprocessing)"
            )


def _same_shape(want: Sequence[int], got: Sequence[int], free: set[int]) -> bool:
    return len(want) == len(got) and all(
        w == g or i in free for i, (w, g) in enumerate(zip(want, got, strict=True))
    )


def open_for_shards(
    checkpoint: str | Path,
    specs: str | Sequence[str],
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    *,
    purpose: str,
) -> tuple[LoadedCheckpoint, Config, list[str]]:
    """The checkpoint, its config with ``config_file``/``overrides`` over it, and the shard specs to run it on
    (``specs``, else the config's ``data.val_shards``; ``ShardSpecError`` naming ``purpose`` when neither).

    The checkpoint is refused (``CheckpointError``) when its model is built by code the caller's own
    ``model.builder`` and ``modalities.plugins`` (from ``config_file``/``overrides``) do not name, as
    ``open_checkpoint`` does."""
    ckpt = _open_unchecked(checkpoint)
    cfg = ckpt.config(overrides, config_file=config_file)  # its builder and plug-ins are the caller's alone
    ckpt.trust(cfg.model.builder, cfg.modalities.plugins)
    specs = [specs] if isinstance(specs, str) else list(specs or cfg.data.val_shards)
    if not specs:
        raise ShardSpecError(f"no shards to {purpose}: pass shard specs or set data.val_shards")
    return ckpt, cfg, specs


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The ``checkpoint_*`` directory of ``run_dir`` furthest into training, and its state.

    Chosen by what is saved inside (finished epochs, then the optimizer steps of a step checkpoint), not by
    name: names are timestamps, and a clock or a copied directory can disagree with the training order.
    States are loaded one at a time.
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
        if best is None or _progress(state) >= _progress(best[1]):
            best = (directory, state)
    assert best is not None
    return best


def _progress(state: dict[str, Any]) -> tuple[int, int]:
    """(finished epochs, optimizer steps of the run) of a checkpoint's state (steps 0 before format 3)."""
    position = state.get("position") or {}
    return int(state["epoch"]), int(position.get("global_step", 0))


def _load(directory: Path) -> dict[str, Any]:
    try:
        return load_checkpoint(directory)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        # torch raises RuntimeError on a damaged file and UnpicklingError on one that is not weights only.
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{directory}: cannot read the checkpoint: {first}") from None

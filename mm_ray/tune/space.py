"""Search spaces: a YAML file of dotted config keys -> distributions, turned into what Ray Tune samples.

A space file uses the same dotted keys as CLI overrides (``model.width``, ``train.lr``,
``train.lr_by_modality.text``); each maps to one distribution, optionally with a condition::

    model.preset: {choice: [late_concat, gated, low_rank_tensor]}
    model.width: {choice: [16, 32]}
    model.fusion_dim: {grid: [32, 64]}        # every value, tune.num_samples times each (random search)
    train.lr: {loguniform: [3.0e-4, 3.0e-3]}
    model.dropout: {uniform: [0.0, 0.3]}
    model.rank:                               # exists only for low-rank tensor fusion
      randint: [2, 8]                         # both ends included
      when: {model.preset: low_rank_tensor}   # or a list of values; several keys = all must hold

    space = load_space("pipelines/tune_small_space.yaml")
    space.param_space(seed=0)        # Tune param_space for random search (conditionals via sample_from)
    DefineByRun(space)               # Optuna define-by-run function (conditionals as Python branches)
    space.active(trial_config)       # {key: value} of the parameters a trial really uses

Only ``model.*`` and ``train.*`` keys can be searched: trials read a preprocessed cache, so preprocessing
keys would change nothing, and the keys that size a trial or place its files are fixed for the whole sweep
(``RESERVED``). Every key and value is checked against the config schema, and every preset against
the model zoo's presets, so a typo fails before any trial starts, with a ``ConfigError`` naming the key.
A ``when`` may only name a ``choice`` or ``grid`` parameter listed earlier in the file (Optuna asks in file
order).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mm_ray.config.load import ConfigError, build, set_dotted
from mm_ray.config.schema import Config
from mm_ray.modalities.registry import BUILTIN, Registry
from mm_ray.models.presets import FUSION_PRESETS, only_modality

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
"""``choice: [v, ...]``, ``grid: [v, ...]``, ``uniform: [low, high]``, ``loguniform: [low, high]``,
``randint: [low, high]`` (ints, both ends included).

``grid`` is Tune's grid search: random search runs every value (every combination of several grids)
``tune.num_samples`` times, sampling the other keys afresh each time, so that e.g. every preset of a
comparison is trained. Optuna has no grid: it treats a ``grid`` as a ``choice``."""

CATEGORICAL = ("choice", "grid")

SEARCHABLE_PREFIXES = ("model.", "train.")

RESERVED = frozenset(
    {
        "train.cache",
        "train.val_cache",
        "train.storage_path",
        "train.epochs",  # ASHA's max_t: the same for every trial
        "train.num_workers",  # these three size a trial: max_concurrent_trials depends on them
        "train.cpus_per_worker",
        "train.use_gpu",
        "train.fail_at_epoch",
        "model.num_classes",
    }
)
"""Keys a space may not search: fixed for the whole sweep (set them in the base config)."""

LR_BY_MODALITY = "train.lr_by_modality."


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched key: its distribution, arguments, and the condition under which it exists."""

    key: str
    kind: str
    args: tuple[Any, ...]
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def is_active(self, values: Mapping[str, Any]) -> bool:
        """Whether this parameter exists given the values already chosen for earlier ones."""
        return all(values.get(key) in allowed for key, allowed in self.when)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The parsed space, parameters in file order."""

    params: tuple[Param, ...]

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def active(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a trial with this sampled ``config`` uses, in space order.

        Inactive conditionals are dropped (random search samples them as None, Optuna leaves them out), as are
        per-modality learning rates of modalities the preset has no encoder for (a unimodal baseline):
        ``param_groups`` would reject them, and they would not change that model anyway.
        """
        chosen: dict[str, Any] = {}
        for p in self.params:
            if p.key in config and config[p.key] is not None and p.is_active(chosen):
                chosen[p.key] = config[p.key]
        only = only_modality(chosen["model.preset"]) if "model.preset" in chosen else None
        if only is not None:
            unused = [k for k in chosen if k.startswith(LR_BY_MODALITY) and k != LR_BY_MODALITY + only]
            for key in unused:
                del chosen[key]
        return chosen

    def as_dict(self) -> dict[str, Any]:
        """The space as a space file's mapping (``parse_space(space.as_dict()) == space``)."""
        out: dict[str, Any] = {}
        for p in self.params:
            spec: dict[str, Any] = {p.kind: list(p.args)}
            if p.when:
                spec["when"] = {key: list(values) for key, values in p.when}
            out[p.key] = spec
        return out

    def grid_size(self) -> int:
        """Trials per ``tune.num_samples`` under random search: the number of combinations of the grids."""
        return math.prod(len(p.args) for p in self.params if p.kind == "grid")

    def param_space(self, seed: int = 0) -> dict[str, Any]:
        """Tune's ``param_space`` for random search (``BasicVariantGenerator``)."""
        from ray import tune

        space: dict[str, Any] = {}
        for i, p in enumerate(self.params):
            domain = tune_domain(p)
            if p.when:
                # Tune passes a sample_from function the config sampled so far; it cannot pass the
                # generator's RNG, so each conditional keeps its own seeded one (reproducible sweeps).
                space[p.key] = tune.sample_from(_Conditional(p, domain, seed * 1000 + i))
            else:
                space[p.key] = domain
        return space


class _Conditional:
    """``tune.sample_from`` body: a value from the domain when the condition holds, else None (inactive)."""

    def __init__(self, param: Param, domain: Any, seed: int) -> None:
        import numpy as np

        self.param, self.domain, self.rng = param, domain, np.random.default_rng(seed)

    def __call__(self, config: Mapping[str, Any]) -> Any:
        if not self.param.is_active(config):
            return None
        return self.domain.sample(random_state=self.rng)


class DefineByRun:
    """Optuna define-by-run function: asks for each parameter in file order, skipping inactive ones."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        for p in self.space.params:
            if p.is_active(chosen):
                chosen[p.key] = _suggest(trial, p)


def _suggest(trial: Any, p: Param) -> Any:
    if p.kind in CATEGORICAL:
        return trial.suggest_categorical(p.key, list(p.args))
    if p.kind == "randint":
        return trial.suggest_int(p.key, p.args[0], p.args[1])
    return trial.suggest_float(p.key, p.args[0], p.args[1], log=p.kind == "loguniform")


def tune_domain(p: Param) -> Any:
    """The Tune domain of one parameter (unconditional)."""
    from ray import tune

    if p.kind == "choice":
        return tune.choice(list(p.args))
    if p.kind == "grid":
        return tune.grid_search(list(p.args))
    if p.kind == "randint":
        return tune.randint(p.args[0], p.args[1] + 1)  # Tune's upper bound is exclusive
    if p.kind == "loguniform":
        return tune.loguniform(*p.args)
    return tune.uniform(*p.args)


def load_space(path: str | Path, registry: Registry = BUILTIN) -> SearchSpace:
    """Parse and validate the space file ``path`` (its modality names against ``registry``: the built-ins, plus
    the sweep's plug-ins); errors are ``ConfigError`` naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"tune.space: search space file not found: {path}")
    raw = yaml.safe_load(path.read_text())
    try:
        return parse_space(raw, registry)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def parse_space(raw: Any, registry: Registry = BUILTIN) -> SearchSpace:
    """A ``SearchSpace`` from the mapping read from a space file (modality names checked against ``registry``)."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("a search space is a non-empty mapping of dotted keys to distributions")
    params: list[Param] = []
    for key, spec in raw.items():
        param = _parse_param(str(key), spec, {p.key: p for p in params})
        _check_values(param, registry)
        params.append(param)
    return SearchSpace(tuple(params))


def _parse_param(key: str, spec: Any, earlier: Mapping[str, Param]) -> Param:
    if not key.startswith(SEARCHABLE_PREFIXES):
        raise ConfigError(f"{key}: only model.* and train.* keys can be searched (trials read the cache)")
    if key in RESERVED:
        raise ConfigError(f"{key}: fixed for the whole sweep; set it in the base config, not the space")
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}: expected a mapping such as {{choice: [...]}}, got {spec!r}")
    unknown = sorted(set(spec) - {*DISTRIBUTIONS, "when"})
    kinds = [k for k in DISTRIBUTIONS if k in spec]
    if unknown or len(kinds) != 1:
        raise ConfigError(f"{key}: expected exactly one of {', '.join(DISTRIBUTIONS)} (and optionally when)")
    kind = kinds[0]
    if kind == "grid" and "when" in spec:
        # Tune expands grids before it samples anything, so a grid cannot depend on another value.
        raise ConfigError(f"{key}: a grid cannot have a when (use choice)")
    return Param(key, kind, _parse_args(key, kind, spec[kind]), _parse_when(key, spec.get("when"), earlier))


def _parse_args(key: str, kind: str, args: Any) -> tuple[Any, ...]:
    if kind in CATEGORICAL:
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{key}.{kind}: expected a non-empty list")
        # Scalars only: Optuna's categorical suggestions hold str/int/float/bool, and None means "inactive".
        if any(v is None or isinstance(v, (list, dict)) for v in args):
            raise ConfigError(f"{key}.{kind}: values must be strings, numbers or booleans, got {args!r}")
        return tuple(args)
    numeric = isinstance(args, list) and len(args) == 2
    numeric = numeric and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in args)
    if not numeric or not args[0] < args[1]:
        raise ConfigError(f"{key}.{kind}: expected [low, high] with low < high, got {args!r}")
    if kind == "randint" and not all(isinstance(v, int) for v in args):
        raise ConfigError(f"{key}.randint: expected integers, got {args!r}")
    if kind == "loguniform" and args[0] <= 0:
        raise ConfigError(f"{key}.loguniform: low must be > 0, got {args[0]!r}")
    return tuple(args)


def _parse_when(key: str, when: Any, earlier: Mapping[str, Param]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, dict) or not when:
        raise ConfigError(f"{key}.when: expected a mapping such as {{model.preset: low_rank_tensor}}")
    conditions = []
    for other, allowed in when.items():
        parent = earlier.get(other)
        if parent is None or parent.kind not in CATEGORICAL:
            raise ConfigError(
                f"{key}.when: {other!r} must be a choice or grid parameter listed before {key!r}"
            )
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        missing = [v for v in values if v not in parent.args]
        if missing:
            raise ConfigError(f"{key}.when: {other} never takes {missing} (its choices: {list(parent.args)})")
        conditions.append((str(other), values))
    return tuple(conditions)


def _is_preset(name: Any, registry: Registry) -> bool:
    return name in FUSION_PRESETS or only_modality(str(name)) in registry


def _check_values(p: Param, registry: Registry) -> None:
    """Every value the parameter can take must make a valid config (unknown keys and wrong types fail)."""
    if p.key == "model.preset":
        unknown = [v for v in p.args if not _is_preset(v, registry)]
        if unknown or p.kind not in CATEGORICAL:
            known = [f"unimodal_{m}" for m in registry.names] + list(FUSION_PRESETS)
            raise ConfigError(f"model.preset: unknown preset(s) {unknown}; known: {', '.join(known)}")
    if p.key.startswith(LR_BY_MODALITY) and p.key[len(LR_BY_MODALITY) :] not in registry:
        raise ConfigError(f"{p.key}: not a modality (expected one of {', '.join(registry.names)})")
    values = p.args if p.kind in CATEGORICAL else _range_probes(p)
    for value in values:
        raw: dict[str, Any] = {}
        set_dotted(raw, p.key, value)
        build(Config, raw, prefix="")


def _range_probes(p: Param) -> tuple[Any, ...]:
    # Both ends, as the type Tune will sample: floats for uniform/loguniform (an int key rejects them).
    low, high = p.args
    return (low, high) if p.kind == "randint" else (float(low), float(high))

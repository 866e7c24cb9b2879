"""The registry: the modalities of a run, in one canonical order, and every per-modality table derived from it.

    reg = modalities_of(cfg)              # the run's modalities: data.modalities (built-ins + plug-ins)
    reg.names                             # ("image", "text", "audio")
    reg.subsets()                         # every non-empty subset key, singles first: image, text, ..., image+text+audio
    settings_of(cfg, reg["image"])        # the modality's config section (ImageConfig)

The canonical order is the built-ins' (``BUILTIN``: image, text, audio, features), then plug-ins in the order
``modalities.plugins`` names them. Models, subset keys, tables and reports follow it; the ingest pipeline orders
its stages by its own rule (``mm_ray.data.pipeline.stage_order``).

Plug-ins (``modalities.plugins: [package.module:NAME]``) are imported from the user's config or command line
only: a config read back from a checkpoint or a sweep names its plug-ins, and ``modalities_of`` imports them
only when the caller trusts them (``trusted_plugins``; ``mm_ray.train.trust`` checks a checkpoint's against the
user's own).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mm_ray.config.load import ConfigError, build
from mm_ray.config.schema import FUSION_PRESET_NAMES, Config, EncoderConfig, PoolConfig
from mm_ray.modalities.audio import AUDIO
from mm_ray.modalities.features import FEATURES
from mm_ray.modalities.image import IMAGE
from mm_ray.modalities.spec import ModalitySpec
from mm_ray.modalities.text import TEXT

SUBSET_SEPARATOR = "+"

_CONFIG_SECTIONS = frozenset(f.name for f in dataclasses.fields(Config))
"""Top-level config keys: a plug-in named like one would read as a built-in section."""

UNIMODAL_PREFIX = "unimodal_"
"""``unimodal_<m>``: the baseline preset of modality ``m`` (``mm_ray.models.presets``)."""

RESERVED_NAMES = frozenset({"label", "json", "fused", "key", "shard", "all"})
"""Names a plug-in may not take: member roles, the fused pool, column names."""


class Registry:
    """Modality specs in canonical order, with lookups and the subset keys derived from them."""

    def __init__(self, specs: Iterable[ModalitySpec]):
        self.specs: tuple[ModalitySpec, ...] = tuple(specs)
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be distinct, got {names}")
        columns = [c for s in self.specs for c in (*s.column_names, s.raw_column, s.presence_column)]
        if len(set(columns)) != len(columns):
            raise ValueError(f"modalities {names} name the same column twice: {sorted(columns)}")
        self._by_name = {s.name: s for s in self.specs}

    def __iter__(self) -> Iterator[ModalitySpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> ModalitySpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown modality {name!r}; known: {', '.join(self.names)}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Registry) and self.specs == other.specs

    def __hash__(self) -> int:
        return hash(self.specs)

    def __repr__(self) -> str:
        return f"Registry({', '.join(self.names)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def only(self, names: Iterable[str], key: str = "modalities") -> Registry:
        """The registry of ``names`` (any order, canonical order kept); ``ConfigError`` naming ``key`` for an
        unknown name."""
        wanted = list(names)
        unknown = [n for n in wanted if n not in self._by_name]
        if unknown:
            choices = ", ".join(map(repr, self.names))
            raise ConfigError(f"{key}: expected one of {choices}, got {unknown[0]!r}")
        return Registry(s for s in self.specs if s.name in wanted)

    def order(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` in canonical order (unknown names raise ``KeyError``)."""
        wanted = set(names)
        for name in wanted:
            self[name]
        return tuple(n for n in self.names if n in wanted)

    # ------------------------------------------------------------------------------------------- subsets

    def subset_key(self, names: Iterable[str]) -> str:
        """``{"text", "image"}`` -> ``"image+text"`` (canonical order)."""
        return SUBSET_SEPARATOR.join(self.order(names))

    def subsets(self) -> tuple[str, ...]:
        """Every non-empty subset's key: singles first, then pairs, ..., the full set last (2^n - 1 keys)."""
        return tuple(
            SUBSET_SEPARATOR.join(c)
            for r in range(1, len(self.specs) + 1)
            for c in itertools.combinations(self.names, r)
        )

    @property
    def full_subset(self) -> str:
        """The key of the subset holding every modality (its accuracy is the headline ``val_accuracy``)."""
        return SUBSET_SEPARATOR.join(self.names)

    def parse_subset(self, key: str) -> frozenset[str]:
        """``"image+text"`` (any order) -> ``{"image", "text"}``; ``ValueError`` on unknown or repeated names."""
        names = key.split(SUBSET_SEPARATOR)
        unknown = [n for n in names if n not in self._by_name]
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"bad modality subset {key!r}: use names from {self.names} joined by '+'")
        return frozenset(names)

    def canonical_subset(self, key: str) -> str:
        """A subset key in canonical order (``"audio+image"`` -> ``"image+audio"``)."""
        return self.subset_key(self.parse_subset(key))

    # ------------------------------------------------------------------------------------------- columns

    def raw_columns(self) -> tuple[str, ...]:
        return tuple(s.raw_column for s in self.specs)

    def presence_columns(self) -> tuple[str, ...]:
        return tuple(s.presence_column for s in self.specs)

    def model_columns(self) -> tuple[str, ...]:
        return tuple(c for s in self.specs for c in s.column_names)

    def dtypes(self) -> dict[str, str]:
        """Model-ready column -> numpy dtype name."""
        return {c.name: c.dtype for s in self.specs for c in s.columns}


BUILTIN = Registry([IMAGE, TEXT, AUDIO, FEATURES])
"""The built-in modalities, in canonical order."""

DEFAULT_MODALITIES = (IMAGE.name, TEXT.name, AUDIO.name)
"""What a run reads when ``data.modalities`` is not set."""


# ------------------------------------------------------------------------------------------------ plug-ins


def load_plugin(path: str, key: str = "modalities.plugins") -> ModalitySpec:
    """The ``ModalitySpec`` that ``package.module:NAME`` names; ``ConfigError`` naming ``key`` otherwise."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key}: expected 'package.module:NAME' of a ModalitySpec, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or whatever the module raises on import
        raise ConfigError(
            f"{key}: cannot import {module_name!r} ({type(err).__name__}: {err}); it must be importable wherever "
            "mm_ray runs (install it, or put it on PYTHONPATH / in the job's working_dir)"
        ) from None
    spec = getattr(module, attr, None)
    if not isinstance(spec, ModalitySpec):
        raise ConfigError(f"{key}: {path} is not a ModalitySpec (got {type(spec).__name__})")
    if spec.name in BUILTIN or spec.name in RESERVED_NAMES or spec.name in _CONFIG_SECTIONS:
        raise ConfigError(f"{key}: {path} is named {spec.name!r}, which mm_ray uses already; rename it")
    return spec


@functools.lru_cache(maxsize=32)
def registry_with(plugins: tuple[str, ...] = ()) -> Registry:
    """The built-ins plus the plug-ins ``plugins`` names (imported here), in canonical order."""
    return Registry([*BUILTIN, *(load_plugin(p) for p in plugins)])


def modalities_of(cfg: Config, *, trusted_plugins: Sequence[str] | None = None) -> Registry:
    """The modalities run ``cfg`` reads (``data.modalities``, canonical order), its plug-ins imported.

    ``trusted_plugins``: for a config that came with a checkpoint or a sweep (data, not settings): the plug-ins
    the user named themselves; one the config names beyond them is refused, never imported. Also checks every
    per-modality setting of ``cfg`` (names, plug-in settings) and raises ``ConfigError`` naming the key.
    """
    plugins = tuple(cfg.modalities.plugins)
    if trusted_plugins is not None:
        foreign = [p for p in plugins if p not in trusted_plugins]
        if foreign:
            raise ConfigError(
                f"modalities.plugins: the saved config names {foreign[0]}, which you did not name; plug-in code "
                f"runs only from your own settings: pass modalities.plugins=[{', '.join(plugins)}] to trust it"
            )
    everything = registry_with(plugins)
    active = everything.only(active_names(cfg), key="data.modalities")
    check_config(cfg, everything, active)
    return active


def active_names(cfg: Config) -> tuple[str, ...]:
    """``data.modalities``, or the default set plus every plug-in when it is not set."""
    if cfg.data.modalities is not None:
        return tuple(cfg.data.modalities)
    return (*DEFAULT_MODALITIES, *(_plugin_name(p) for p in cfg.modalities.plugins))


def _plugin_name(path: str) -> str:
    return load_plugin(path).name


def model_modalities(cfg: Config, reg: Registry) -> tuple[str, ...]:
    """``model.modalities`` (canonical order), or every modality of the run when it is not set."""
    if cfg.model.modalities is None:
        return reg.names
    return reg.only(cfg.model.modalities, key="model.modalities").names


def check_config(cfg: Config, everything: Registry, active: Registry) -> None:
    """``ConfigError`` naming the first per-modality or preset key of ``cfg`` that names no modality or preset
    of the run (``KEY: expected one of ..., got ...``, as the loader words a bad value)."""
    if not active.specs:
        raise ConfigError("data.modalities: empty; name at least one modality")
    lists = {
        "model.modalities": cfg.model.modalities or [],
        "data.required_modalities": cfg.data.required_modalities,
    }
    for key, names in lists.items():
        for i, name in enumerate(names):
            _expect(f"{key}[{i}]", name, active.names)
    for key, table in (
        ("train.lr_by_modality", cfg.train.lr_by_modality),
        ("model.fusion_weights", cfg.model.fusion_weights),
    ):
        for name in table:
            _expect(f"{key}.{name}", name, active.names)
    for i, pair in enumerate(cfg.embed.pairs):
        query, sep, gallery = pair.partition("->")
        pairs = [f"{a}->{b}" for a in everything.names for b in everything.names if a != b]
        if not sep or query == gallery or query not in everything or gallery not in everything:
            _expect(f"embed.pairs[{i}]", pair, pairs)
    presets = [f"{UNIMODAL_PREFIX}{m}" for m in everything.names] + list(FUSION_PRESET_NAMES)
    _expect("model.preset", cfg.model.preset, presets)
    for key in ("train_presets", "sweep_presets"):
        for i, name in enumerate(getattr(cfg.demo, key)):
            _expect(f"demo.{key}[{i}]", name, presets)
    for key, table in (
        ("modalities.settings", cfg.modalities.settings),
        ("modalities.extensions", cfg.modalities.extensions),
        ("modalities.pools", cfg.modalities.pools),
    ):
        for name in table:
            if name not in everything or _is_builtin_section(name):
                raise ConfigError(
                    f"{key}.{name}: not a plug-in modality (plug-ins: {', '.join(_plugins(everything)) or 'none'}; "
                    f"a built-in modality's settings are {name}.*, data.members.{name}, pools.{name})"
                )
    for spec in active:
        spec.shapes(settings_of(cfg, spec))  # a modality checks its own settings here (features.shape)


def checked(cfg: Config) -> Config:
    """``cfg`` itself, once every name in it is known: modalities (plug-ins imported: the config is the user's
    own), presets, retrieval pairs, plug-in settings. What the CLI and ``mm_ray.load_config`` run right after
    loading, so a typo fails on the driver before Ray starts."""
    modalities_of(cfg)
    return cfg


def _expect(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(map(repr, choices))}, got {value!r}")


def _plugins(reg: Registry) -> list[str]:
    return [n for n in reg.names if n not in BUILTIN]


def _is_builtin_section(name: str) -> bool:
    return name in BUILTIN


# ------------------------------------------------------------------------------- a modality's config keys
# A built-in modality's settings are the config section named after it (``image.size``), its member extensions
# ``data.members.<name>``, its pool ``pools.<name>``, its encoder ``model.encoders.<name>``. A plug-in keeps
# them under ``modalities.*``: ``modalities.settings.<name>``, ``modalities.extensions.<name>``,
# ``modalities.pools.<name>`` (its encoder is its own).


def settings_of(cfg: Config, spec: ModalitySpec) -> Any:
    """The modality's settings (an instance of ``spec.settings_type``); ``ConfigError`` naming a bad key."""
    if _is_builtin_section(spec.name):
        return getattr(cfg, spec.name)
    raw = cfg.modalities.settings.get(spec.name, {})
    return build(spec.settings_type, raw, prefix=f"modalities.settings.{spec.name}")


def settings_key(name: str) -> str:
    """The config section of modality ``name``'s settings (``image``, ``modalities.settings.depth``)."""
    return name if _is_builtin_section(name) else f"modalities.settings.{name}"


def extensions_of(cfg: Config, spec: ModalitySpec) -> tuple[str, ...]:
    """The member extensions read as ``spec`` (configured, else the spec's own)."""
    if _is_builtin_section(spec.name):
        return tuple(getattr(cfg.data.members, spec.name))
    return tuple(cfg.modalities.extensions.get(spec.name) or spec.extensions)


def pool_of(cfg: Config, spec: ModalitySpec) -> PoolConfig:
    """The settings of ``spec``'s own actor pool (``pools.layout=per_modality`` or a pinned stage)."""
    if _is_builtin_section(spec.name):
        return getattr(cfg.pools, spec.name)
    return cfg.modalities.pools.get(spec.name) or PoolConfig(num_cpus=spec.pool_cpus)


def pool_key(spec: ModalitySpec) -> str:
    """The config key of ``spec``'s pool, for messages."""
    return f"pools.{spec.name}" if _is_builtin_section(spec.name) else f"modalities.pools.{spec.name}"


def encoder_config_of(cfg: Config, spec: ModalitySpec) -> EncoderConfig:
    """``model.encoders.<name>`` of a built-in modality; a plug-in's encoder is its spec's own."""
    if _is_builtin_section(spec.name):
        return getattr(cfg.model.encoders, spec.name)
    return EncoderConfig()

"""Load a ``Config`` from YAML plus dotted ``key=value`` overrides, checking every key and type.

Usage::

    cfg = load_config("pipelines/demo.yaml", ["image.size=128", "pools.image.min_size=2"])
    with_keys(cfg, {"train.lr": 0.01})   # the typed config with dotted keys set, each checked like an override
    as_dict(cfg)          # plain dict, for writing the resolved config next to a run (or printing it)
    config_from_dict(as_dict(cfg), ["pools.image.num_cpus=0.5"])   # and back, with overrides on top

Errors are ``ConfigError`` and always name the dotted key at fault, e.g.
``pools.image.num_cpus: expected a number, got 'lots'`` or ``unknown key 'image.sise' (did you mean 'image.size'?)``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
import urllib.parse
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mm_ray.config.schema import Config


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the dotted key."""


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read ``path`` (YAML, may be None for pure defaults), apply ``overrides``, validate, return a Config."""
    raw = read_config_file(path) if path is not None else {}
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return build(Config, raw, prefix="")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (unchecked: ``build`` checks it); an empty file is ``{}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    loaded = yaml.safe_load(path.read_text())
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(loaded).__name__}")
    return loaded or {}


def config_from_dict(
    raw: typing.Mapping[str, Any], overrides: typing.Sequence[str] = (), *, path: str | Path | None = None
) -> Config:
    """A Config from plain data such as ``as_dict`` output (a run's saved config), checked like ``load_config``.

    The YAML file ``path`` is laid over ``raw`` (its mappings merge key by key, its other values replace),
    then ``overrides`` apply on top. ``raw`` itself is not modified.
    """
    merged = copy.deepcopy(dict(raw))
    if path is not None:
        _merge_into(merged, read_config_file(path))
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(merged, key, value)
    return build(Config, merged, prefix="")


def with_keys(cfg: Any, keys: typing.Mapping[str, Any]) -> Any:
    """``cfg`` (a ``Config``, or any section) with the dotted ``keys`` set to their values, each checked like an
    override of the user's (``ConfigError`` naming the key); the sections not named stay the same objects::

        with_keys(cfg, {"train.lr": 0.01, "model.preset": "gated"})
    """
    for key, value in keys.items():
        cfg = _set_key(cfg, type(cfg), key.split("."), value, prefix="")
    return cfg


def _set_key(node: Any, hint: Any, parts: list[str], value: Any, prefix: str) -> Any:
    """``node`` (of type ``hint``) with the key ``parts`` below it set to ``value``."""
    name, rest = parts[0], parts[1:]
    key = _join(prefix, name)
    if isinstance(node, dict):  # a mapping field (``train.lr_by_modality``): its values have one type
        args = typing.get_args(_without_none(hint))
        inner = args[1] if len(args) == 2 else Any
        current = node.get(name)
        new = _set_key(current or {}, inner, rest, value, key) if rest else check(inner, value, key, current)
        return {**node, name: new}
    if not dataclasses.is_dataclass(node):
        raise ConfigError(f"{key}: {prefix} is not a section, got {_show(node)}")
    names = [f.name for f in dataclasses.fields(node)]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint_text = (
            f" (did you mean '{_join(prefix, close[0])}'?)" if close else f" (known: {', '.join(names)})"
        )
        raise ConfigError(f"unknown key '{key}'{hint_text}")
    field_type = typing.get_type_hints(type(node))[name]
    current = getattr(node, name)
    if rest:
        new = _set_key(current if current is not None else {}, field_type, rest, value, key)
    else:
        new = check(field_type, value, key, current)
    return dataclasses.replace(node, **{name: new})


def _without_none(tp: Any) -> Any:
    """``X`` of ``X | None``; other types as they are."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 else tp
    return tp


def _merge_into(base: dict[str, Any], over: typing.Mapping[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=3"`` -> ``("a.b", 3)``; the value is parsed as YAML (so ``[1,2]``, ``null``, ``true`` work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        return key, yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"{key}: cannot parse value {text!r}: {err}") from None


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for key ``"a.b"``, creating intermediate mappings."""
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: depth + 1])}: is a value, cannot set {key}")
        node = child
    node[parts[-1]] = value


def build(cls: type, raw: Any, prefix: str, base: Any = None) -> Any:
    """Dataclass ``cls`` from mapping ``raw`` laid over ``base`` (default: ``cls()``), checked recursively.

    Laying over the parent's default keeps section-specific defaults: overriding only
    ``pools.image.min_size`` must keep ``pools.image.num_cpus`` at the image pool's default,
    not at ``PoolConfig``'s generic one.
    """
    base = cls() if base is None else base
    where = prefix or "the config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f" (did you mean '{_join(prefix, close[0])}'?)" if close else f" (known: {', '.join(names)})"
        raise ConfigError(f"unknown key '{_join(prefix, key)}'{hint}")
    values = {
        name: check(hints[name], raw[name], _join(prefix, name), getattr(base, name))
        for name in names
        if name in raw
    }
    return dataclasses.replace(base, **values)


def check(tp: Any, value: Any, key: str, default: Any = None) -> Any:
    """Return ``value`` converted to type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key, base=default)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return check(inner[0] if len(inner) == 1 else Any, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(repr, args))}, got {_show(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_show(value)}")
        return [check(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_show(value)}")
        return {check(args[0], k, f"{key}.{k}"): check(args[1], v, f"{key}.{k}") for k, v in value.items()}
    return _check_scalar(tp, value, key)


def _check_scalar(tp: Any, value: Any, key: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_show(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp!r} in the schema")


def as_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain Python data (what ``mm-ray config show`` prints and runs save)."""
    return dataclasses.asdict(cfg)


PERSISTED_STORAGE_OPTIONS = frozenset(
    {"endpoint_override", "region", "scheme", "force_virtual_addressing", "anonymous", "request_timeout"}
)
"""``data.storage_options`` keys that may be written to disk or printed (an allow-list: access keys, secret
keys, session tokens and anything unknown stay in memory)."""


def persistable(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (``as_dict`` of a config) as it may be saved or printed: ``data.storage_options`` keeps only
    ``PERSISTED_STORAGE_OPTIONS``; ``track.mlflow`` loses any ``user:password@``. A run read back from disk
    takes credentials from its environment (pyarrow reads ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    MLflow ``MLFLOW_TRACKING_*``) or the command line, never from a file."""
    out = dict(raw)
    data = out.get("data")
    if isinstance(data, dict) and data.get("storage_options"):
        options = data["storage_options"]
        out["data"] = {
            **data,
            "storage_options": {k: v for k, v in options.items() if k in PERSISTED_STORAGE_OPTIONS},
        }
    track = out.get("track")
    if isinstance(track, dict) and track.get("mlflow"):
        out["track"] = {**track, "mlflow": without_userinfo(track["mlflow"])}
    return out


def without_userinfo(uri: str) -> str:
    """``uri`` without a ``user:password@`` part (``https://u:p@host/x`` -> ``https://host/x``): tracking
    credentials belong in MLflow's environment variables, never in a saved or printed config."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"

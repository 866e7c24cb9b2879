"""String labels: the label map (class names, id = position) a run uses with ``data.labels=names``.

    cfg = with_classes(cfg, ["shards/train-*.tar"])   # data.classes filled, e.g. ["bird", "cat", "dog"]
    read_label_names(urls, member_map(cfg))           # the distinct labels of those shards, sorted

The map comes from, in this order: ``data.classes`` as given; the cache ``data.classes_from`` names (its
manifest); else the training shards themselves: every sample's label string (``.cls``/``.txt`` member or
the JSON label field), distinct values sorted by code point, so the same shards give the same ids on any
machine and in any shard order. The map then travels with the data: the cache manifest (``preprocess.classes``)
and every checkpoint's saved config (``data.classes``), which ``mm-ray evaluate``/``embed`` reuse.

Building the map reads the shards once on the driver, label and JSON members only (image and audio members are
skipped, never held in memory); for very large shard sets give ``data.classes`` instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import Config
from mm_ray.data.members import MemberMap, label_name, label_parts, member_map
from mm_ray.data.raw import RawSample
from mm_ray.data.sources import expand_shards
from mm_ray.data.tar_stream import iter_shard
from mm_ray.tasks import TargetStats
from mm_ray.tasks.multilabel import tag_names
from mm_ray.tasks.regression import target_values


def read_label_names(
    urls: Iterable[str], members: MemberMap, storage_options: dict[str, str] | None = None
) -> list[str]:
    """The distinct label strings of the samples in ``urls``, sorted; bad labels and bad shards are skipped
    (the ingest that follows quarantines them with their reasons)."""
    # Only the label and JSON members are read: the others map to nothing, so the reader skips their bytes.
    reader = dataclasses.replace(members, extensions=(), json_fields=(), required=(), label_names=None)
    names: set[str] = set()
    for url in urls:
        for item in iter_shard(url, storage_options=storage_options, members=reader):
            if not isinstance(item, RawSample):
                continue
            try:
                name = label_name(item, reader)
            except ValueError:
                continue
            if name is not None:
                names.add(name)
    return sorted(names)


def read_tag_names(
    urls: Iterable[str], members: MemberMap, separator: str, storage_options: dict[str, str] | None = None
) -> list[str]:
    """The union of the tag names of the samples in ``urls`` (multilabel), sorted; bad labels are skipped."""
    names: set[str] = set()
    for item in _label_samples(urls, members, storage_options):
        member, field, _ = label_parts(item, members)
        try:
            names.update(tag_names(member, field, separator) or ())
        except ValueError:
            continue
    return sorted(names)


def _label_samples(urls: Iterable[str], members: MemberMap, storage_options: dict[str, str] | None):
    """The raw samples of ``urls`` with their label and JSON members only (the others are never read)."""
    reader = dataclasses.replace(members, extensions=(), json_fields=(), required=(), label_names=None)
    for url in urls:
        for item in iter_shard(url, storage_options=storage_options, members=reader):
            if isinstance(item, RawSample):
                yield item


def with_classes(cfg: Config, specs: Iterable[str]) -> Config:
    """``cfg`` with ``data.classes`` filled when ``data.labels=names`` or ``task.kind=multilabel`` (else ``cfg``
    itself): from ``data.classes_from``, else the labels (tags) of the shards ``specs`` (the training shards)."""
    data = cfg.data
    tags = cfg.task.kind == "multilabel"
    if (data.labels != "names" and not tags) or data.classes:
        return cfg
    if data.classes_from:
        classes = cache_classes(data.classes_from, data.storage_options)
    else:
        urls = expand_shards(list(specs), storage_options=data.storage_options)
        without_map = dataclasses.replace(
            cfg,
            data=dataclasses.replace(data, labels="integer"),
            task=dataclasses.replace(cfg.task, kind="classification"),
        )
        if tags:
            classes = read_tag_names(urls, member_map(without_map), cfg.task.separator, data.storage_options)
        else:
            classes = read_label_names(urls, member_map(without_map), data.storage_options)
        if not classes:
            raise ConfigError(
                f"data.labels=names: no label found in the {len(urls)} training shard(s) (label members "
                f"{list(data.members.label)}, JSON field {data.members.json_label_field!r})"
            )
    return dataclasses.replace(cfg, data=dataclasses.replace(data, classes=list(classes)))


def cache_classes(uri: str, storage_options: dict[str, str] | None = None) -> list[str]:
    """The class names saved in the cache at ``uri``; ``ConfigError`` naming ``data.classes_from`` if none."""
    from mm_ray.data.cache import Cache

    try:
        classes = Cache.open(uri, storage_options).classes
    except FileNotFoundError as err:
        raise ConfigError(f"data.classes_from: {err}") from None
    if not classes:
        raise ConfigError(f"data.classes_from: the cache {uri} has integer labels (no class names)")
    return list(classes)


def read_targets(
    urls: Iterable[str],
    members: MemberMap,
    targets: tuple[str, ...],
    storage_options: dict[str, str] | None = None,
) -> np.ndarray:
    """The regression targets ``[N, T]`` of the samples in ``urls`` (bad or missing ones skipped)."""
    rows = []
    for item in _label_samples(urls, members, storage_options):
        member, _, meta = label_parts(item, members)
        try:
            values = target_values(member, meta, targets, members.json_label_field)
        except ValueError:
            continue
        if values is not None:
            rows.append(values)
    return np.stack(rows) if rows else np.zeros((0, max(1, len(targets))), np.float32)


def with_target_stats(cfg: Config, specs: Iterable[str]) -> Config:
    """``cfg`` with ``task.target_mean``/``target_std`` filled for regression (else ``cfg`` itself): the mean and
    standard deviation of the targets of the shards ``specs`` (the training shards), read on the driver (label
    and JSON members only). Set them in the config to skip the read."""
    task, data = cfg.task, cfg.data
    if task.kind != "regression" or task.target_mean:
        return cfg
    urls = expand_shards(list(specs), storage_options=data.storage_options)
    plain = dataclasses.replace(cfg, task=dataclasses.replace(task, kind="classification"))
    values = read_targets(urls, member_map(plain), tuple(task.targets), data.storage_options)
    if not len(values):
        raise ConfigError(
            f"task.kind=regression: no target found in the {len(urls)} training shard(s) (task.targets "
            f"{list(task.targets)}, label members {list(data.members.label)}, JSON field "
            f"{data.members.json_label_field!r})"
        )
    stats = TargetStats.of(values)
    return dataclasses.replace(
        cfg, task=dataclasses.replace(task, target_mean=list(stats.mean), target_std=list(stats.std))
    )

"""A cache's ``manifest.json`` as typed records: ``CacheManifest`` with its ``PreprocessingRecord`` and
``IngestRecord``, each with one writer (``to_dict``) and one reader (``from_dict``).

    manifest = cache_manifest(cfg, summary, urls, tokenizer_json, seconds, label_counts={"0": 12})
    text = manifest.to_json()                        # what ``mm_ray.data.build`` writes, last
    CacheManifest.from_json(text) == manifest        # what ``Cache.open`` reads
    manifest.samples_ok, manifest.shapes["input_ids"], manifest.preprocess.classes

The manifest is data a cache brought along, not settings: a field the reader does not know, or a missing one it
needs, is a ``RecordError`` naming it. Layouts written before this one still read (their caches still train):

- the first (the oldest caches): no ``ingest`` nor ``label_counts``; ``shapes`` without the text mask's column;
  ``preprocess`` holding ``image`` and ``audio`` sections and ``text_max_length``;
- the second added ``ingest`` and ``label_counts``; the third ``preprocess.classes`` and ``preprocess.members``
  (string labels);
- the current one keeps each modality's recorded settings under ``preprocess.modalities``.

``mm_ray.modalities.legacy`` translates the old per-modality words. Pure Python: no Ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mm_ray.config.schema import Config, MembersConfig, TaskConfig
from mm_ray.modalities.legacy import first_preprocess_sections, manifest_shapes
from mm_ray.modalities.registry import BUILTIN, Registry, extensions_of, modalities_of, settings_of
from mm_ray.records import as_mapping, plain, read_record, record_fields
from mm_ray.tasks import TargetStats, target_stats_of

TOKENIZER = "tokenizer.json"
"""The tokenizer's file name inside a cache (what a manifest's ``tokenizer`` names)."""


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """What the ``label`` column of a cache holds when it is not a class id (``task.kind``; ``mm_ray.tasks``):
    how the labels were read, and for regression the training targets' standardisation."""

    kind: str
    """``multilabel`` or ``regression``."""
    targets: tuple[str, ...] = ()
    """regression: the JSON fields read as targets (empty: one number in the label member / JSON field)."""
    separator: str = ","
    """multilabel: the tag separator of label members."""
    target_stats: TargetStats | None = None
    """regression: the per-target mean and standard deviation of the targets the rows were made from."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "targets": list(self.targets), "separator": self.separator}
        if self.target_stats is not None:
            out["target_stats"] = self.target_stats.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRecord:
        fields = record_fields(cls, data, "cache manifest: preprocess: task")
        if fields.get("target_stats") is not None:
            fields["target_stats"] = TargetStats.from_dict(fields["target_stats"])
        return cls(**fields)

    @classmethod
    def of(cls, task: TaskConfig) -> TaskRecord | None:
        """The record of a config's ``task`` section; None for classification (the label column as always)."""
        if task.kind == "classification":
            return None
        stats = target_stats_of(task) if task.kind == "regression" else None
        return cls(task.kind, tuple(task.targets), task.separator, stats)


@dataclasses.dataclass(frozen=True)
class PreprocessingRecord:
    """What the rows of a cache were made with: how to decode new shards for a model trained on them."""

    modalities: Mapping[str, Mapping[str, Any]]
    """Modality -> its recorded settings (``ModalitySpec.record``: those the model-ready bytes depend on)."""
    classes: tuple[str, ...] = ()
    """With string labels (``data.labels=names``): the label map, label id = position; else empty."""
    members: MembersConfig | None = None
    """With string labels: ``data.members`` as the label strings were read (new shards must be read the same
    way to get the same ids); else None."""
    task: TaskRecord | None = None
    """The task the labels were read for (multilabel, regression); None = class ids (and every older layout)."""
    names_modalities: bool = True
    """Whether ``modalities`` are the data's modalities. False for the first layout, which recorded three
    sections without saying which modalities the data held: the run's ``data.modalities`` stands."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", {m: dict(s) for m, s in self.modalities.items()})
        object.__setattr__(self, "classes", tuple(self.classes))

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``preprocess`` (always the current layout)."""
        saved = plain(self)
        out: dict[str, Any] = {"modalities": saved["modalities"]}
        if self.classes:
            out["classes"] = saved["classes"]
        if self.members is not None:
            out["members"] = saved["members"]
        if self.task is not None:
            out["task"] = self.task.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessingRecord:
        """The record ``to_dict`` wrote, or one of the first layout (``image``/``audio``/``text_max_length``)."""
        what, unsaved = "cache manifest: preprocess", ("names_modalities",)
        if "modalities" in as_mapping(data, what):
            fields = record_fields(cls, data, what, unsaved=unsaved)
        else:  # the first layout: a section per modality at the top, in that layout's words
            labels = {k: data[k] for k in ("classes", "members") if k in data}
            sections = first_preprocess_sections({k: v for k, v in data.items() if k not in labels})
            fields = {
                **record_fields(cls, {**labels, "modalities": sections}, what),
                "names_modalities": False,
            }
        if fields.get("members") is not None:  # members a later version added take their defaults
            fields["members"] = read_record(MembersConfig, fields["members"], f"{what}: members")
        if fields.get("task") is not None:
            fields["task"] = TaskRecord.from_dict(fields["task"])
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class IngestRecord:
    """What the preprocessing run did (``mm-ray preprocess`` prints it): the ledger's counts and the pools."""

    samples_read: int
    samples_ok: int
    samples_quarantined: int
    quarantine_reasons: Mapping[str, int]
    seconds: float
    samples_per_s: float
    shards: int = 0
    members_ignored: Mapping[str, int] = dataclasses.field(default_factory=dict)
    shards_unreadable: tuple[str, ...] = ()
    shards_truncated: tuple[str, ...] = ()
    shards_empty: tuple[str, ...] = ()
    pools: str = ""
    """The resource plan of the actor pools, in words (``IngestPlan.describe``)."""

    def __post_init__(self) -> None:
        for name in ("shards_unreadable", "shards_truncated", "shards_empty"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "quarantine_reasons", dict(self.quarantine_reasons))
        object.__setattr__(self, "members_ignored", dict(self.members_ignored))

    @classmethod
    def of_run(cls, summary: Mapping[str, Any], seconds: float) -> IngestRecord:
        """From an ingest's final summary (``Ingest.finish``) and the run's wall time."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in summary.items() if k in names}
        rate = round(summary["samples_read"] / max(seconds, 1e-9), 1)
        return cls(**{**kept, "seconds": round(seconds, 2), "samples_per_s": rate})

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IngestRecord:
        return cls(**record_fields(cls, data, "cache manifest: ingest"))


@dataclasses.dataclass(frozen=True)
class CacheManifest:
    """A complete cache's ``manifest.json``: counts, shapes, what the rows were made with, where from."""

    created: str
    """UTC time of writing (ISO 8601)."""
    config_hash: str
    """``preprocess_config_hash``: equal hashes, equal preprocessing."""
    shards: tuple[str, ...]
    """The shard URLs the rows came from."""
    samples_ok: int
    """Rows in the cache (samples that passed every check)."""
    samples_read: int
    samples_quarantined: int
    quarantine_reasons: Mapping[str, int]
    shapes: Mapping[str, tuple[int, ...]]
    """Per-row shape of every model-ready column (``image`` [3, S, S], ``input_ids`` [L], ...)."""
    tokenizer: str
    """The tokenizer's file name inside the cache (a name, never a path: ``Cache.tokenizer_json`` checks)."""
    preprocess: PreprocessingRecord
    seconds: float
    ingest: IngestRecord | None = None
    """None in the first layout."""
    label_counts: Mapping[str, int] | None = None
    """Samples per label id (as a string); None in the first layout."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shards", tuple(self.shards))
        object.__setattr__(self, "quarantine_reasons", dict(self.quarantine_reasons))
        object.__setattr__(self, "shapes", {c: tuple(v) for c, v in manifest_shapes(self.shapes).items()})
        if self.label_counts is not None:
            object.__setattr__(self, "label_counts", dict(self.label_counts))

    @property
    def num_classes(self) -> int | None:
        """The number of class names (string labels), else one more than the largest label counted (None when
        the labels were not counted)."""
        if self.preprocess.classes:
            return len(self.preprocess.classes)
        counts = self.label_counts
        return 1 + max(int(label) for label in counts) if counts else None

    def made_by(self, cfg: Config, tokenizer_json: str, urls: Sequence[str]) -> bool:
        """Whether the rows are what ``cfg``'s preprocessing with this tokenizer makes of exactly ``urls``."""
        same_settings = self.config_hash == preprocess_config_hash(cfg, tokenizer_json)
        return same_settings and sorted(self.shards) == sorted(urls)

    def to_dict(self) -> dict[str, Any]:
        out = plain(self)
        for name in ("ingest", "label_counts"):
            if out[name] is None:
                del out[name]
        return out

    def to_json(self) -> str:
        """The file's text (sorted keys, indented: a person reads it too)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CacheManifest:
        """The manifest ``to_dict`` wrote, or one of an older layout (see the module's docstring)."""
        fields = record_fields(cls, data, "cache manifest")
        fields["preprocess"] = PreprocessingRecord.from_dict(fields["preprocess"])
        if fields.get("ingest") is not None:
            fields["ingest"] = IngestRecord.from_dict(fields["ingest"])
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> CacheManifest:
        return cls.from_dict(json.loads(text))


def cache_manifest(
    cfg: Config,
    summary: Mapping[str, Any],
    urls: Sequence[str],
    tokenizer_json: str,
    seconds: float,
    *,
    label_counts: Mapping[str, int] | None = None,
) -> CacheManifest:
    """The manifest of a cache that ``cfg``'s preprocessing made from ``urls`` (``summary``: the ingest's final
    counts, ``Ingest.finish``)."""
    return CacheManifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        config_hash=preprocess_config_hash(cfg, tokenizer_json),
        shards=tuple(urls),
        samples_ok=summary["samples_ok"],
        samples_read=summary["samples_read"],
        samples_quarantined=summary["samples_quarantined"],
        quarantine_reasons=summary["quarantine_reasons"],
        shapes=model_ready_shapes(cfg),
        tokenizer=TOKENIZER,
        preprocess=preprocessing_of(cfg),
        seconds=round(seconds, 2),
        ingest=IngestRecord.of_run(summary, seconds),
        label_counts=label_counts,
    )


def preprocessing_of(cfg: Config) -> PreprocessingRecord:
    """The settings a manifest records as ``preprocess`` (what a model trained on the rows saw): each modality's
    recorded settings (``ModalitySpec.record``); with string labels also the label map and the member mapping
    the label strings were read with."""
    reg = modalities_of(cfg)
    names = cfg.data.labels == "names" or cfg.task.kind == "multilabel"
    return PreprocessingRecord(
        modalities={s.name: s.record(settings_of(cfg, s)) for s in reg},
        classes=tuple(cfg.data.classes) if names else (),
        members=cfg.data.members if names or cfg.task.kind == "regression" else None,
        task=TaskRecord.of(cfg.task),
    )


def preprocess_config_hash(cfg: Config, tokenizer_json: str) -> str:
    """sha256 over the settings that determine the cache's content."""
    reg = modalities_of(cfg)
    relevant = {
        "modalities": {s.name: s.record(settings_of(cfg, s)) for s in reg},
        "extensions": {s.name: list(extensions_of(cfg, s)) for s in reg},
        # Hashed as plain data: the member fields of no modality (labels, JSON fields).
        "members": {k: v for k, v in dataclasses.asdict(cfg.data.members).items() if k not in BUILTIN},
        "required": list(cfg.data.required_modalities),
        "label_required": cfg.data.label_required,
        "tokenizer_sha256": hashlib.sha256(tokenizer_json.encode()).hexdigest(),
    }
    if cfg.data.labels == "names" or cfg.task.kind == "multilabel":
        relevant["classes"] = list(cfg.data.classes)
    if cfg.task.kind != "classification":  # only then: the caches of class ids keep their hashes
        relevant["task"] = {
            "kind": cfg.task.kind,
            "targets": list(cfg.task.targets),
            "separator": cfg.task.separator,
        }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def model_ready_shapes(cfg: Config, registry: Registry | None = None) -> dict[str, list[int]]:
    """Per-row shapes of the model-ready columns that ``cfg``'s preprocessing makes, for its modalities."""
    reg = registry if registry is not None else modalities_of(cfg)
    return {c: list(shape) for s in reg for c, shape in s.shapes(settings_of(cfg, s)).items()}

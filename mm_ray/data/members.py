"""Which tar member is which modality: turn a ``RawSample`` into one row of raw columns.

Usage::

    from mm_ray.data.members import MemberMap, assemble

    members = MemberMap(required=("image",), label_required=False)   # e.g. img2dataset shards
    row, records = assemble(raw_sample, members)
    # row is None when the sample is quarantined; records explain why (plus member-level notes)

A row has exactly the raw columns of ``mm_ray.columns``: KEY, SHARD, LABEL (int, -1 when absent and not
required), and per modality of the map its raw column (``<m>_bytes``: bytes or None) and presence (``has_<m>``).
``MemberMap()`` maps the default modalities (image, text, audio) to their specs' extensions; ``member_map(cfg)``
the run's. Nothing is decoded here: images, audio and the UTF-8 of ``.txt`` are checked by the preprocessors.

Rules (each quarantined sample gets exactly one sample-level record, first rule that fails wins):

1. An extension maps by full match first, then by its last dotted part (``seg.png`` -> png). When
   several members map to one role, a full match beats a last-part match, then the order of the
   tuple decides (``jpg`` before ``png``); the others are ignored. Unmapped members get a
   member-level ``UNKNOWN_EXTENSION`` record and the sample is kept.
2. No mapped member at all -> ``NO_KNOWN_MEMBERS``.
3. A modality's member as-is; for a modality that falls back on JSON (text: ``json_fields``), else
   ``json[field]`` if it is a string (UTF-8 encoded).
   Label: the cls member (ASCII non-negative int, whitespace ok), else ``json[json_label_field]``
   (an int, or a string of digits). A label that is present but not such an int -> ``BAD_LABEL``.
   With ``task="multilabel"`` or ``"regression"`` the label is a float32 vector read by ``mm_ray.tasks``
   (tag names -> multi-hot over ``label_names``; numbers -> targets), BAD_LABEL / UNKNOWN_LABEL naming the field.
   With ``label_names`` (``data.labels=names``) the label is a string instead (the UTF-8 member stripped,
   or a string/int JSON field, at most 200 characters) and its id is its index in ``label_names``; one
   that is not listed -> ``UNKNOWN_LABEL``.
4. A JSON member that does not parse, or is not an object, is treated as if it held no fields.
   If the sample is then quarantined for something the JSON was the only source of (no label while
   ``label_required``; a required modality that only the JSON could give; no content at all) the reason is
   ``BAD_JSON``; otherwise the sample is kept (e.g. img2dataset metadata next to a ``.txt``) and
   the JSON gets a member-level ``IGNORED_MEMBER`` note.
5. No label while ``label_required`` -> ``MISSING_LABEL``; a ``required`` modality missing ->
   ``MISSING_REQUIRED_MODALITY``.
6. A sample left with no modality's content at all (e.g. only ``.cls``) -> ``NO_KNOWN_MEMBERS``:
   a row with nothing to learn from only teaches the label prior.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping

import numpy as np

from mm_ray import columns as C
from mm_ray.config.load import ConfigError
from mm_ray.config.schema import Config
from mm_ray.data.raw import RawSample
from mm_ray.modalities.registry import BUILTIN, DEFAULT_MODALITIES, Registry, extensions_of, modalities_of
from mm_ray.modalities.spec import presence_column, raw_column
from mm_ray.quarantine import QuarantineRecord, Reason
from mm_ray.tasks.base import UnknownLabel
from mm_ray.tasks.multilabel import multi_hot, tag_names
from mm_ray.tasks.regression import target_values

# The ledger has no dedicated member-level code for "mapped but ignored" members (a duplicate
# extension, an unparseable JSON nobody needed); they reuse the one member-level code so they are
# counted without charging the sample error budget. Swap in a dedicated code here when one exists.
IGNORED_MEMBER = Reason.IGNORED_MEMBER

LABEL_ROLE, JSON_ROLE = "label", "json"
"""The member roles besides the modalities: the class label, and JSON metadata (label and text fields)."""
_LABEL_RE = re.compile(r"\+?[0-9]{1,18}")  # 18 digits always fits int64

Pairs = tuple[tuple[str, tuple[str, ...]], ...]


def _default_extensions() -> Pairs:
    return tuple((m, BUILTIN[m].extensions) for m in DEFAULT_MODALITIES)


def _default_json_fields() -> tuple[tuple[str, str], ...]:
    return tuple((m, "caption") for m in DEFAULT_MODALITIES if BUILTIN[m].json_fallback)


@dataclasses.dataclass(frozen=True)
class MemberMap:
    """Extensions for each role, and what a sample must contain to be kept."""

    extensions: Pairs | Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=_default_extensions)
    """Modality -> the member extensions read as it (first match wins), in the run's canonical order."""
    label: tuple[str, ...] = ("cls",)
    json: tuple[str, ...] = ("json",)
    json_fields: tuple[tuple[str, str], ...] | Mapping[str, str] = dataclasses.field(
        default_factory=_default_json_fields
    )
    """Modality -> the JSON member's field read as its content when the sample has no member of it ("" or
    absent: none)."""
    json_label_field: str = "label"
    """Field of the JSON member used as label when there is no label member ("" disables)."""
    required: tuple[str, ...] = ()
    """Modalities a sample must have, else MISSING_REQUIRED_MODALITY."""
    label_required: bool = True
    """Quarantine samples without a label (MISSING_LABEL); when False their LABEL is -1."""
    max_member_bytes: int = 64 << 20
    """Larger members (by their tar header) quarantine their sample (MEMBER_TOO_LARGE), unread."""
    max_sample_bytes: int = 256 << 20
    """Samples whose members add up to more are quarantined (SAMPLE_TOO_LARGE); the rest is not read."""
    label_names: tuple[str, ...] | None = None
    """None: labels are non-negative integers (BAD_LABEL otherwise). A tuple: labels are strings, and the
    label of a sample is the index of its string here (UNKNOWN_LABEL when it is not listed); with
    ``task="multilabel"`` the tag map."""
    task: str = "classification"
    """What the label is (``task.kind``): a class id; a multi-hot vector over ``label_names`` (``multilabel``:
    tags split at ``tag_separator`` or a JSON list); float targets (``regression``: ``targets``)."""
    tag_separator: str = ","
    """multilabel: what separates the tags in a label member."""
    targets: tuple[str, ...] = ()
    """regression: the JSON fields holding the targets; empty = one number in the label member or JSON field."""

    def __post_init__(self) -> None:
        # Accept mappings and lists (from YAML) and any case; store lower-case tuples so the map stays hashable.
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.task == "multilabel" and self.label_names is None:
            raise ValueError("task multilabel: the tag map (label_names) is required")
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(str(x) for x in self.label_names))
            if len(set(self.label_names)) != len(self.label_names):
                raise ValueError("label names must be distinct")
        pairs = self.extensions.items() if isinstance(self.extensions, Mapping) else self.extensions
        object.__setattr__(self, "extensions", tuple((m, _extensions(exts)) for m, exts in pairs))
        fields = self.json_fields.items() if isinstance(self.json_fields, Mapping) else self.json_fields
        object.__setattr__(self, "json_fields", tuple((m, f) for m, f in fields if f))
        for role in (LABEL_ROLE, JSON_ROLE):
            object.__setattr__(self, role, _extensions(getattr(self, role)))
        required = (self.required,) if isinstance(self.required, str) else self.required
        object.__setattr__(self, "required", tuple(str(x).lower() for x in required))
        unknown = set(self.required) - set(self.modalities)
        if unknown:
            raise ValueError(f"required modalities must be among {self.modalities}, got {sorted(unknown)}")
        owners: dict[str, str] = {}
        for role, extensions in self.roles():
            for ext in extensions:
                if owners.setdefault(ext, role) != role:
                    raise ValueError(f"extension {ext!r} is mapped to both {owners[ext]!r} and {role!r}")

    @property
    def label_width(self) -> int:
        """Entries of a vector label (multilabel: tags; regression: targets); 0 for a class id."""
        if self.task == "multilabel":
            return len(self.label_names or ())
        if self.task == "regression":
            return max(1, len(self.targets))
        return 0

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this map reads, in order."""
        return tuple(m for m, _ in self.extensions)

    def roles(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Every role (the modalities, then label and json) with its extensions."""
        return (*self.extensions, (LABEL_ROLE, self.label), (JSON_ROLE, self.json))

    def role_of(self, ext: str) -> tuple[str, tuple[int, int]] | None:
        """``(role, rank)`` for an extension, ``None`` if unmapped; a lower rank is a better match."""
        roles = _role_table(self)
        if ext in roles:
            role, index = roles[ext]
            return role, (0, index)
        last = ext.rsplit(".", 1)[-1]
        if last in roles:
            role, index = roles[last]
            return role, (1, index)
        return None


def _extensions(value: object) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else value
    return tuple(str(x).lower().lstrip(".") for x in values)  # type: ignore[union-attr]


def assemble(sample: RawSample, members: MemberMap) -> tuple[dict | None, list[QuarantineRecord]]:
    """One row of raw columns for ``sample``, or ``None`` plus the records saying why it is quarantined."""
    chosen, unknown = _choose(sample, members)
    records = [_note(sample, Reason.UNKNOWN_EXTENSION, f"member {_member(sample, e)!r}") for e in unknown]
    if not chosen:
        names = [_member(sample, e) for e in sample.members]
        return None, [*records, _note(sample, Reason.NO_KNOWN_MEMBERS, f"members {names}")]
    found = {role: sample.members[ext] for role, ext in chosen.items()}
    meta, json_error = _parse_json(found.get(JSON_ROLE))
    content = {m: found.get(m) for m in members.modalities}
    for modality, field in members.json_fields:
        if content.get(modality) is None:
            content[modality] = _json_text(meta.get(field))
    json_label = meta.get(members.json_label_field) if members.json_label_field else None
    try:
        if members.task != "classification":
            label = _task_label(found.get(LABEL_ROLE), json_label, meta, members)
        elif members.label_names is None:
            label = _label(found.get(LABEL_ROLE), json_label)
        else:
            label = _named_label(found.get(LABEL_ROLE), json_label, members)
    except UnknownLabel as e:
        return None, [*records, _note(sample, Reason.UNKNOWN_LABEL, str(e))]
    except ValueError as e:
        return None, [*records, _note(sample, Reason.BAD_LABEL, str(e))]
    problem = _problem(content, label, members, json_error, found=set(found))
    if problem is not None:
        return None, [*records, _note(sample, *problem)]
    if json_error:
        json_member = _member(sample, chosen[JSON_ROLE])
        records.append(_note(sample, IGNORED_MEMBER, f"member {json_member!r} ignored: {json_error}"))
    return _row(sample, content, label, members), records


def _choose(sample: RawSample, members: MemberMap) -> tuple[dict[str, str], list[str]]:
    """Pick the best-matching member for each role; return ``{role: ext}`` and the unmapped extensions."""
    best: dict[str, tuple[tuple[int, int], str]] = {}
    unknown = []
    for ext in sample.members:
        match = members.role_of(ext)
        if match is None:
            unknown.append(ext)
            continue
        role, rank = match
        if role not in best or rank < best[role][0]:
            best[role] = (rank, ext)
    return {role: ext for role, (_, ext) in best.items()}, unknown


def _problem(
    content: dict, label: int | None, members: MemberMap, json_error: str, *, found: set[str]
) -> tuple[Reason, str] | None:
    """The first sample-level ``(reason, detail)`` that quarantines the sample, or ``None``."""
    # The JSON takes the blame only where it was the sole possible source of what is missing.
    from_json = {m for m, _ in members.json_fields if json_error and m not in found}
    if label is None and members.label_required:
        if json_error and LABEL_ROLE not in found and members.json_label_field:
            return Reason.BAD_JSON, f"no label member and the JSON is unusable: {json_error}"
        return Reason.MISSING_LABEL, "no label member and no label field in the JSON"
    for modality in members.required:
        if content[modality] is None:
            if modality in from_json:
                return Reason.BAD_JSON, f"no {modality} member and the JSON is unusable: {json_error}"
            return Reason.MISSING_REQUIRED_MODALITY, f"required modality {modality!r} is missing"
    if all(value is None for value in content.values()):
        if from_json:
            return Reason.BAD_JSON, f"no content besides a JSON that is unusable: {json_error}"
        return Reason.NO_KNOWN_MEMBERS, f"no {', '.join(members.modalities)} content"
    return None


def _parse_json(raw: bytes | None) -> tuple[dict, str]:
    """``(fields, error)``: the JSON object (or ``{}``) and an error text ("" when fine or absent)."""
    if raw is None:
        return {}, ""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return {}, f"not valid JSON ({e})"
    if not isinstance(value, dict):
        return {}, f"JSON is a {type(value).__name__}, not an object"
    return value, ""


def _json_text(value: object) -> bytes | None:
    # Only strings are text; "surrogatepass" keeps lone surrogates from \ud800 escapes as bytes the
    # text preprocessor will reject as bad UTF-8, instead of failing here.
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else None


def _label(member: bytes | None, field: object) -> int | None:
    """The label from the cls member, else the JSON field; ``None`` when absent, ``ValueError`` when bad."""
    if member is not None:
        text = member.decode("ascii", "replace").strip()
        if not _LABEL_RE.fullmatch(text):
            raise ValueError(
                f"label member is not a non-negative integer: {text[:40]!r} (string labels: data.labels=names)"
            )
        return int(text)
    if field is None:
        return None
    if isinstance(field, str) and _LABEL_RE.fullmatch(field.strip()):
        return int(field.strip())
    if isinstance(field, int) and not isinstance(field, bool) and 0 <= field < 2**63:
        return field
    raise ValueError(
        f"JSON label field is not a non-negative integer: {str(field)[:40]!r} (string labels: data.labels=names)"
    )


MAX_LABEL_NAME_CHARS = 200
"""Longer string labels are BAD_LABEL: a class name is a word or a phrase, not a caption."""


def label_name(sample: RawSample, members: MemberMap) -> str | None:
    """The sample's label as a string (names mode), ``None`` when it has none; ``ValueError`` when it is bad.

    What a label map is built from (``mm_ray.data.labels``); ``assemble`` maps it to an id."""
    member, field, _ = label_parts(sample, members)
    return _label_text(member, field)


def label_parts(sample: RawSample, members: MemberMap) -> tuple[bytes | None, object, dict]:
    """``(label member bytes, JSON label field, JSON fields)`` of a sample: what its label is read from."""
    chosen, _ = _choose(sample, members)
    found = {role: sample.members[ext] for role, ext in chosen.items()}
    meta, _ = _parse_json(found.get(JSON_ROLE))
    field = meta.get(members.json_label_field) if members.json_label_field else None
    return found.get(LABEL_ROLE), field, meta


def _label_text(member: bytes | None, field: object) -> str | None:
    if member is not None:
        try:
            text = member.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ValueError("label member is not valid UTF-8") from None
        where = "label member"
    elif field is None:
        return None
    elif isinstance(field, str):
        text, where = field.strip(), "JSON label field"
    elif isinstance(field, int) and not isinstance(field, bool):
        text, where = str(field), "JSON label field"  # 3 and "3" name the same class, as in a .cls member
    else:
        raise ValueError(f"JSON label field is not a string or an integer: {str(field)[:40]!r}")
    if not text:
        raise ValueError(f"{where} is empty")
    if len(text) > MAX_LABEL_NAME_CHARS:
        raise ValueError(f"{where} is {len(text)} characters, over {MAX_LABEL_NAME_CHARS}: {text[:40]!r}...")
    return text


def _named_label(member: bytes | None, field: object, members: MemberMap) -> int | None:
    text = _label_text(member, field)
    if text is None:
        return None
    index = _label_index(members).get(text)
    if index is None:
        raise UnknownLabel(f"label {text[:60]!r} is not one of the {len(members.label_names or ())} classes")
    return index


def _task_label(member: bytes | None, field: object, meta: dict, members: MemberMap):
    """A multilabel or regression label: a float32 vector, None when absent, ``ValueError`` when bad."""
    if members.task == "multilabel":
        tags = tag_names(member, field, members.tag_separator, members.json_label_field)
        where = "label member" if member is not None else f"JSON field {members.json_label_field!r}"
        return None if tags is None else multi_hot(tags, _label_index(members), where)
    return target_values(member, meta, members.targets, members.json_label_field)


@functools.lru_cache(maxsize=16)
def _label_index(members: MemberMap) -> dict[str, int]:
    return {name: i for i, name in enumerate(members.label_names or ())}


def _row(sample: RawSample, content: dict, label, members: MemberMap) -> dict:
    if label is None:  # not required: -1 for a class id, NaN for a vector
        label = np.full(members.label_width, np.nan, np.float32) if members.label_width else -1
    row = {C.KEY: sample.key, C.SHARD: sample.shard, C.LABEL: label}
    for modality, value in content.items():
        row[raw_column(modality)] = value
        row[presence_column(modality)] = value is not None
    return row


def _note(sample: RawSample, reason: Reason, detail: str) -> QuarantineRecord:
    return QuarantineRecord(sample.shard, sample.key, reason, detail)


def _member(sample: RawSample, ext: str) -> str:
    return f"{sample.key}.{ext}" if ext else sample.key


@functools.lru_cache(maxsize=64)
def _role_table(members: MemberMap) -> dict[str, tuple[str, int]]:
    return {ext: (role, i) for role, extensions in members.roles() for i, ext in enumerate(extensions)}


def member_map(cfg: Config, registry: Registry | None = None) -> MemberMap:
    """The reader's member mapping of run ``cfg`` (its modalities: ``registry``, default ``modalities_of(cfg)``).

    With ``data.labels=names`` the class names must be known (``data.classes``): ``mm_ray.data.labels.
    with_classes`` fills them from the training shards, a cache or a checkpoint before any ingest starts."""
    reg = registry if registry is not None else modalities_of(cfg)
    m = cfg.data.members
    names = None
    if cfg.data.labels == "names" or cfg.task.kind == "multilabel":
        if not cfg.data.classes:
            raise ConfigError(
                f"data.classes: empty with {'task.kind=multilabel' if cfg.task.kind == 'multilabel' else 'data.labels=names'}; "
                "build the label map from the training shards first "
                "(mm_ray.data.labels.with_classes) or set data.classes / data.classes_from"
            )
        names = tuple(cfg.data.classes)
    return MemberMap(
        extensions=tuple((spec.name, extensions_of(cfg, spec)) for spec in reg),
        label=tuple(m.label),
        json=tuple(m.json),
        json_fields=tuple((spec.name, m.json_text_field) for spec in reg if spec.json_fallback),
        json_label_field=m.json_label_field,
        required=tuple(cfg.data.required_modalities),
        label_required=cfg.data.label_required,
        max_member_bytes=cfg.data.max_member_bytes,
        max_sample_bytes=cfg.data.max_sample_bytes,
        label_names=names,
        task=cfg.task.kind,
        tag_separator=cfg.task.separator,
        targets=tuple(cfg.task.targets),
    )

"""Why a sample (or a shard) was set aside, and the record kept for each one.

Every bad input ends up as a ``QuarantineRecord`` naming the shard, the sample key and a
``Reason``; the pipeline counts them by reason and writes them to a JSONL quarantine log.
Good samples are never dropped because a neighbour was bad.
"""

from __future__ import annotations

import dataclasses
from enum import Enum


class Reason(str, Enum):
    """Reason codes. Sample-level codes quarantine one sample; shard-level codes describe a shard."""

    # sample level
    CORRUPT_IMAGE = "corrupt_image"
    """The image member could not be decoded (truncated, not an image, unsupported)."""
    CORRUPT_AUDIO = "corrupt_audio"
    """The audio member could not be decoded."""
    EMPTY_AUDIO = "empty_audio"
    """The audio member decoded to zero frames (or the member was zero bytes)."""
    BAD_TEXT_ENCODING = "bad_text_encoding"
    """The text member is not valid UTF-8."""
    CAPTION_TOO_LONG = "caption_too_long"
    """The caption is longer than ``text.max_caption_bytes``; it is neither tokenized nor trained on."""
    BAD_JSON = "bad_json"
    """A ``.json`` member could not be parsed (or is not a JSON object)."""
    MISSING_LABEL = "missing_label"
    """No label member (``.cls``) and no label field in the JSON member."""
    BAD_LABEL = "bad_label"
    """The label member/field is not an integer."""
    MISSING_REQUIRED_MODALITY = "missing_required_modality"
    """The config marks a modality required and the sample has no member for it."""
    NO_KNOWN_MEMBERS = "no_known_members"
    """None of the sample's members has an extension mapped to a modality or label."""
    TRUNCATED_SAMPLE = "truncated_sample"
    """The tar stream ended (truncated shard) while this sample was being read."""
    NONCONTIGUOUS_KEY = "noncontiguous_key"
    """Members of this key appeared again after other keys; the late fragment is set aside."""
    MEMBER_TOO_LARGE = "member_too_large"
    """A member's tar header declares more than ``data.max_member_bytes``; its bytes are never read."""
    SAMPLE_TOO_LARGE = "sample_too_large"
    """The sample's members add up to more than ``data.max_sample_bytes``; the rest is never read."""
    BAD_COMPRESSION = "bad_compression"
    """A ``<ext>.gz`` member that is not valid gzip (bad header or CRC, cut short)."""
    UNKNOWN_LABEL = "unknown_label"
    """A string label that is not among the run's class names (``data.classes``: built from the training
    shards, or saved with the cache / checkpoint), e.g. a class never seen in training."""
    BAD_FEATURES = "bad_features"
    """A ``features`` member that is not a ``.npy`` array of ``features.dtype`` and ``features.shape`` (or holds
    NaN/inf, or needs pickle to load)."""
    BAD_MEMBER_NAME = "bad_member_name"
    """A member name that is not valid UTF-8 (e.g. a latin-1 byte in a GNU header); shown escaped."""
    # member level (the sample is kept; the member is ignored and counted)
    UNKNOWN_EXTENSION = "unknown_extension"
    """A member with an extension that maps to no modality (ignored, sample kept)."""
    IGNORED_MEMBER = "ignored_member"
    """A known member that was not used (duplicate extension, unneeded bad JSON); the sample is kept."""
    # shard level
    UNREADABLE_SHARD = "unreadable_shard"
    """The shard could not be opened or is not a tar archive at all."""
    TRUNCATED_SHARD = "truncated_shard"
    """The shard's tar stream ends early; the samples before the cut are kept."""
    EMPTY_SHARD = "empty_shard"
    """The shard holds no samples."""


SHARD_LEVEL = frozenset({Reason.UNREADABLE_SHARD, Reason.TRUNCATED_SHARD, Reason.EMPTY_SHARD})
MEMBER_LEVEL = frozenset({Reason.UNKNOWN_EXTENSION, Reason.IGNORED_MEMBER})


def is_member_level(code: str) -> bool:
    """Whether reason code ``code`` notes one member (the sample is kept)."""
    return code in {r.value for r in MEMBER_LEVEL}


def is_sample_level(code: str) -> bool:
    """Whether reason code ``code`` quarantines a whole sample (it counts against the error budget). Codes a
    plug-in modality's decoder writes (``ModalitySpec.reasons``) are sample level."""
    return code not in {r.value for r in SHARD_LEVEL} and not is_member_level(code)


@dataclasses.dataclass(frozen=True)
class QuarantineRecord:
    """One quarantined sample, ignored member, or shard problem.

    ``key`` is the sample key ("" for shard-level records); ``detail`` is a short
    human-readable explanation (exception text, the offending member name, ...).
    """

    shard: str
    key: str
    reason: Reason
    detail: str = ""

    def to_json(self) -> dict:
        return {"shard": self.shard, "key": self.key, "reason": self.reason.value, "detail": self.detail}

    @property
    def is_sample(self) -> bool:
        """True when the record quarantines a whole sample (it counts against the error budget)."""
        return self.reason not in SHARD_LEVEL and self.reason not in MEMBER_LEVEL


class SampleError(Exception):
    """Raised by a per-sample decode step; carries the reason the sample is quarantined for: a ``Reason``, or
    the code of a plug-in modality's own reason (a short snake_case string)."""

    def __init__(self, reason: Reason | str, detail: str = ""):
        self.code = reason.value if isinstance(reason, Reason) else str(reason)
        super().__init__(f"{self.code}: {detail}" if detail else self.code)
        self.reason = reason
        self.detail = detail

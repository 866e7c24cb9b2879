"""Multi-label tagging (``task.kind=multilabel``): each sample carries a set of tag names.

Labels: a JSON list of names in ``data.members.json_label_field`` (``{"label": ["dog", "outdoor"]}``), or a
label member (``.cls``) holding the names split at ``task.separator`` (``dog,outdoor``); a JSON string field is
split the same way. An empty list or member is a sample with no tag (all zeros), a name outside the tag map
quarantines the sample (``unknown_label``), anything else that is not a list of names is ``bad_label``.

The tag map is ``data.classes`` (empty: the sorted union of the training shards' tags, built like the class map
of named labels, ``mm_ray.data.labels``); the ``label`` column is a float32 multi-hot vector ``[K]``; the loss is
BCE-with-logits (mean over samples and tags); a tag is predicted when its sigmoid is at least
``task.threshold``.

Metrics (``MultilabelMetrics``, mergeable): loss; micro F1 (every tag decision pooled); macro F1 (the mean of
the per-tag F1 over the tags that have a positive or a prediction: a tag with neither has no F1); mAP (the mean
over tags with at least one positive of the average precision, ``average_precision``: exact, from every
sample's scores, which ranks gather rather than sum, ``mm_ray.train.mergeable``); tag accuracy (the fraction
of (sample, tag) decisions right, what the benchmark's Bayes reference bounds). The headline is ``val_map``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mm_ray.tasks.base import UnknownLabel

ROWS_SCORES, ROWS_TARGETS = "rows_scores", "rows_targets"
"""State entries holding one row per sample: ranks concatenate them (``mm_ray.train.mergeable.ROWS_PREFIX``)."""

MAX_TAGS_PER_SAMPLE = 1000
MAX_TAG_CHARS = 200


@dataclasses.dataclass(frozen=True)
class Multilabel:
    threshold: float = 0.5
    separator: str = ","
    kind: str = "multilabel"
    headline: str = "map"
    mode: str = "max"
    metrics: tuple[str, ...] = ("map", "micro_f1", "macro_f1", "tag_accuracy")

    def label_shape(self, outputs: int) -> tuple[int, ...]:
        return (outputs,)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        decided = (torch.sigmoid(logits.float()) >= self.threshold) == (labels > 0.5)
        return decided.float().mean(dim=-1).sum()

    def meter(self, outputs: int) -> MultilabelMetrics:
        return MultilabelMetrics(outputs, self.threshold)

    def class_meter(self, outputs: int) -> MultilabelMetrics:
        return MultilabelMetrics(outputs, self.threshold)

    def class_table(self, meter: MultilabelMetrics, names: Sequence[str] | None) -> list[dict[str, Any]]:
        return meter.per_tag(names)


def tag_names(
    member: bytes | None, field: object, separator: str, field_name: str = "label"
) -> list[str] | None:
    """The tag names of one sample: from the label member (UTF-8, split at ``separator``), else the JSON label
    field (a list of strings, or a string split at ``separator``); None when it has neither; ``ValueError``
    naming the source when it is not a set of names."""
    if member is not None:
        try:
            text = member.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("label member is not valid UTF-8") from None
        return _checked(text.split(separator), "label member")
    if field is None:
        return None
    if isinstance(field, str):
        return _checked(field.split(separator), f"JSON field {field_name!r}")
    if isinstance(field, list) and all(isinstance(x, str) for x in field):
        return _checked(field, f"JSON field {field_name!r}")
    raise ValueError(f"JSON field {field_name!r} is not a list of tag names: {str(field)[:40]!r}")


def _checked(parts: Sequence[str], where: str) -> list[str]:
    tags = [t.strip() for t in parts if t.strip()]
    if len(tags) > MAX_TAGS_PER_SAMPLE:
        raise ValueError(f"{where} has {len(tags)} tags, over {MAX_TAGS_PER_SAMPLE}")
    long = [t for t in tags if len(t) > MAX_TAG_CHARS]
    if long:
        raise ValueError(
            f"{where}: a tag of {len(long[0])} characters, over {MAX_TAG_CHARS}: {long[0][:40]!r}..."
        )
    return tags


def multi_hot(tags: Sequence[str], index: Mapping[str, int], where: str = "label") -> np.ndarray:
    """float32 ``[len(index)]`` with 1 at each tag's position; ``UnknownLabel`` for a tag not in ``index``."""
    out = np.zeros(len(index), dtype=np.float32)
    for tag in tags:
        position = index.get(tag)
        if position is None:
            raise UnknownLabel(f"{where}: tag {tag[:60]!r} is not one of the {len(index)} tags")
        out[position] = 1.0
    return out


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """The average precision of one tag: the mean, over its positive samples, of the precision among the samples
    scored at least as high (ties count together). NaN when the tag has no positive."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(targets) > 0.5
    if not positive.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    tp = np.cumsum(p)
    # The last index of each run of equal scores: precision is taken there, over the whole tie.
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    precision = tp[last] / (last + 1)
    new_positives = np.diff(np.r_[0, tp[last]])
    return float((precision * new_positives).sum() / p.sum())


class MultilabelMetrics:
    """Loss, per-tag TP/FP/FN, tag decisions right, and every sample's scores (for mAP) over batches of logits
    ``[B, K]`` against multi-hot labels ``[B, K]`` (``Mergeable``: the ``rows_*`` entries concatenate)."""

    def __init__(self, num_tags: int, threshold: float = 0.5) -> None:
        self.num_tags, self.threshold = num_tags, threshold
        self._sums = {
            "loss_sum": torch.zeros((), dtype=torch.float64),
            "samples": torch.zeros((), dtype=torch.int64),
            "decided": torch.zeros((), dtype=torch.int64),
            "tp": torch.zeros(num_tags, dtype=torch.int64),
            "fp": torch.zeros(num_tags, dtype=torch.int64),
            "fn": torch.zeros(num_tags, dtype=torch.int64),
        }
        self._scores: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.detach().float()
        truth = labels.to(logits.device) > 0.5
        predicted = torch.sigmoid(logits) >= self.threshold
        bce = F.binary_cross_entropy_with_logits(logits, truth.float(), reduction="sum").double()
        batch = {
            "loss_sum": bce,
            "samples": torch.tensor(logits.shape[0], dtype=torch.int64),
            "decided": (predicted == truth).sum(),
            "tp": (predicted & truth).sum(dim=0),
            "fp": (predicted & ~truth).sum(dim=0),
            "fn": (~predicted & truth).sum(dim=0),
        }
        for name, value in batch.items():
            self._sums[name] = self._sums[name].to(logits.device) + value.to(logits.device)
        self._scores.append(torch.sigmoid(logits).cpu())
        self._targets.append(truth.to(torch.uint8).cpu())

    def state(self) -> dict[str, torch.Tensor]:
        rows = {
            ROWS_SCORES: torch.cat(self._scores) if self._scores else torch.zeros(0, self.num_tags),
            ROWS_TARGETS: torch.cat(self._targets)
            if self._targets
            else torch.zeros(0, self.num_tags, dtype=torch.uint8),
        }
        return {**self._sums, **rows}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self._sums = {name: state[name] for name in self._sums}
        self._scores, self._targets = [state[ROWS_SCORES].cpu()], [state[ROWS_TARGETS].cpu()]

    def _per_tag(self) -> dict[str, np.ndarray]:
        tp, fp, fn = (self._sums[k].cpu().numpy().astype(np.float64) for k in ("tp", "fp", "fn"))
        state = self.state()
        scores, targets = state[ROWS_SCORES].numpy(), state[ROWS_TARGETS].numpy()
        ap = np.array([average_precision(scores[:, k], targets[:, k]) for k in range(self.num_tags)])
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = 2 * tp / (2 * tp + fp + fn)
            precision, recall = tp / (tp + fp), tp / (tp + fn)
        return {"tp": tp, "fp": fp, "fn": fn, "f1": f1, "ap": ap, "precision": precision, "recall": recall}

    def result(self) -> dict[str, float | int]:
        """``{"loss", "map", "micro_f1", "macro_f1", "tag_accuracy", "samples"}``; NaN when nothing was seen."""
        samples = int(self._sums["samples"].item())
        if not samples:
            nan = float("nan")
            return {
                "loss": nan,
                "map": nan,
                "micro_f1": nan,
                "macro_f1": nan,
                "tag_accuracy": nan,
                "samples": 0,
            }
        t = self._per_tag()
        pooled = 2 * t["tp"].sum() + t["fp"].sum() + t["fn"].sum()
        defined = t["f1"][~np.isnan(t["f1"])]
        aps = t["ap"][~np.isnan(t["ap"])]
        cells = samples * self.num_tags
        return {
            "loss": self._sums["loss_sum"].item() / cells,
            "map": float(aps.mean()) if aps.size else float("nan"),
            "micro_f1": float(2 * t["tp"].sum() / pooled) if pooled else float("nan"),
            "macro_f1": float(defined.mean()) if defined.size else float("nan"),
            "tag_accuracy": self._sums["decided"].item() / cells,
            "samples": samples,
        }

    def per_tag(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per tag: ``{"class": name, "id", "positives", "predicted", "precision", "recall", "f1",
        "ap"}`` (NaN where undefined)."""
        if not int(self._sums["samples"].item()):
            return []
        t = self._per_tag()
        return [
            {
                "class": names[k] if names and k < len(names) else str(k),
                "id": k,
                "positives": int(t["tp"][k] + t["fn"][k]),
                "predicted": int(t["tp"][k] + t["fp"][k]),
                "precision": float(t["precision"][k]),
                "recall": float(t["recall"][k]),
                "f1": float(t["f1"][k]),
                "ap": float(t["ap"][k]),
            }
            for k in range(self.num_tags)
        ]

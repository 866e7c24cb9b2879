"""Loss and accuracy per modality subset: how well does the model do when it sees only some modalities?

Usage::

    reg = modalities_of(cfg)                                   # the run's modalities (mm_ray.modalities)
    results = evaluate_subsets(model, val_batches, reg.subsets(), device="cuda", registry=reg)
    results["image+text"]  # {"accuracy": 0.91, "loss": 0.27, "samples": 3000}
    print(format_subset_table(results))

A subset is a key such as ``"image+audio"`` (modality names joined by ``+`` in the registry's canonical order:
image, text, audio, features, then plug-ins; ``Registry.subsets()`` lists all 2^n - 1). To evaluate a subset,
every modality outside it is masked out of the batch: its presence column (``has_<m>``) is set to False and its
model-ready columns are zeroed, which is exactly what the data plane emits for a sample that never had that
modality; the model then falls back on its learned "missing" embedding. Modalities inside the subset keep their
original presence, so a sample that had no audio still has none under ``"audio"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mm_ray.columns import LABEL
from mm_ray.modalities.registry import BUILTIN, DEFAULT_MODALITIES, Registry
from mm_ray.tables import format_table
from mm_ray.train.autocast import autocast_context
from mm_ray.train.loop import to_device
from mm_ray.train.wrapping import unwrap

DEFAULT_REGISTRY = BUILTIN.only(DEFAULT_MODALITIES)
"""The modalities scored when a caller names none: a run's default ones (image, text, audio)."""


def parse_subset(subset: str, registry: Registry = DEFAULT_REGISTRY) -> frozenset[str]:
    """``"image+text"`` -> ``{"image", "text"}``; raises ValueError on unknown or repeated names."""
    return registry.parse_subset(subset)


def mask_modalities(
    batch: Mapping[str, torch.Tensor], keep: Iterable[str], registry: Registry = DEFAULT_REGISTRY
) -> dict[str, torch.Tensor]:
    """A copy of ``batch`` in which every modality of ``registry`` not in ``keep`` is absent; ``batch`` is not
    modified."""
    keep = frozenset(keep)
    out = dict(batch)
    for spec in registry:
        if spec.name in keep or spec.presence_column not in out:
            continue
        out[spec.presence_column] = torch.zeros_like(out[spec.presence_column], dtype=torch.bool)
        for column in spec.column_names:
            if column in out:
                out[column] = torch.zeros_like(out[column])
    return out


class SubsetMetrics:
    """Accumulates sample-weighted cross-entropy and accuracy over batches of logits (``Mergeable``).

    ``update(logits, labels)`` per batch, ``result()`` at the end. The sums stay on the logits' device so
    updating never forces a device sync; ``result()`` syncs once. ``state()``/``load_state()`` expose the sums
    so ranks scoring parts of one set can add them up (``mm_ray.train.mergeable.all_reduce_metrics``).
    """

    def __init__(self) -> None:
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._correct = torch.zeros((), dtype=torch.int64)
        self._samples = torch.zeros((), dtype=torch.int64)

    @property
    def samples(self) -> int:
        return int(self._samples.item())

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.detach().float()
        labels = labels.to(logits.device).long()
        loss_sum = F.cross_entropy(logits, labels, reduction="sum").double()
        correct = (logits.argmax(dim=-1) == labels).sum()
        device = logits.device
        self._loss_sum = self._loss_sum.to(device) + loss_sum
        self._correct = self._correct.to(device) + correct
        self._samples = self._samples.to(device) + labels.shape[0]

    def state(self) -> dict[str, torch.Tensor]:
        return {"loss_sum": self._loss_sum, "correct": self._correct, "samples": self._samples}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self._loss_sum, self._correct, self._samples = state["loss_sum"], state["correct"], state["samples"]

    def result(self) -> dict[str, float | int]:
        """``{"loss", "accuracy", "samples"}``; loss and accuracy are NaN when nothing was seen."""
        samples = self.samples
        if not samples:
            return {"loss": float("nan"), "accuracy": float("nan"), "samples": 0}
        return {
            "loss": self._loss_sum.item() / samples,
            "accuracy": self._correct.item() / samples,
            "samples": samples,
        }


class ClassMetrics:
    """Samples and correct predictions per true class (``update(logits, labels)`` per batch), on the device
    until ``result`` syncs once (``Mergeable``). ``num_classes`` fixes the state's length (needed to merge
    ranks, one of which may not see every class); None = sized from the first batch's logits."""

    def __init__(self, num_classes: int | None = None) -> None:
        self._samples: torch.Tensor | None = None
        self._correct: torch.Tensor | None = None
        if num_classes is not None:
            self._samples = torch.zeros(num_classes, dtype=torch.int64)
            self._correct = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        labels = labels.to(logits.device).long()
        n = logits.shape[-1]
        samples = torch.bincount(labels, minlength=n)[:n]
        correct = torch.bincount(labels[logits.argmax(dim=-1) == labels], minlength=n)[:n]
        if self._samples is None:
            self._samples, self._correct = samples, correct
        else:
            self._samples = self._samples.to(samples.device) + samples
            self._correct = self._correct.to(correct.device) + correct

    def state(self) -> dict[str, torch.Tensor]:
        if self._samples is None:
            raise ValueError("ClassMetrics: give num_classes to merge a meter that may have seen no batch")
        return {"samples": self._samples, "correct": self._correct}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self._samples, self._correct = state["samples"], state["correct"]

    def result(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One row per class seen: ``{"class": name (or the id), "id", "samples", "accuracy"}``."""
        if self._samples is None:
            return []
        samples, correct = self._samples.tolist(), self._correct.tolist()
        return [
            {
                "class": names[i] if names and i < len(names) else str(i),
                "id": i,
                "samples": int(n),
                "accuracy": correct[i] / n,
            }
            for i, n in enumerate(samples)
            if n
        ]


def format_class_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``ClassMetrics.result`` as a text table: one row per class, by name."""
    return format_table(
        ["class", "id", "samples", "accuracy"],
        [[str(r["class"]), str(r["id"]), str(r["samples"]), f"{r['accuracy']:.4f}"] for r in rows],
    )


class Padding:
    """A batch that a rank scores only to keep in step with the others (an FSDP model's forward gathers from
    every rank): the model runs on ``batch``, no meter counts it (``lockstep``)."""

    def __init__(self, batch: Mapping[str, Any]) -> None:
        self.batch = batch


def score_subsets(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any] | Padding],
    subsets: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    registry: Registry = DEFAULT_REGISTRY,
    autocast_dtype: torch.dtype | None = None,
    per_class: ClassMetrics | None = None,
    meter: Callable[[], Any] = SubsetMetrics,
) -> dict[str, Any]:
    """``evaluate_subsets``'s pass, returning the meters (``Mergeable``) instead of their results: what a rank
    scoring its part of a split validation set merges with the others' (``all_reduce_metrics``).
    ``Padding`` items are run but not counted. ``meter`` makes each subset's accumulator (anything with
    ``update(logits, labels)`` and the ``Mergeable`` methods: a task's own metrics)."""
    subsets = registry.subsets() if subsets is None else subsets
    keeps = {subset: registry.parse_subset(subset) for subset in subsets}
    meters = {subset: meter() for subset in subsets}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast_context(device, autocast_dtype):
            for raw in batches:
                padding = isinstance(raw, Padding)
                batch = to_device(raw.batch if padding else raw, device)
                for subset, keep in keeps.items():
                    logits = model(mask_modalities(batch, keep, registry))
                    if padding:
                        continue
                    meters[subset].update(logits, batch[LABEL])
                    if per_class is not None and subset == registry.full_subset:
                        per_class.update(logits, batch[LABEL])
    finally:
        model.train(was_training)
    return meters


def evaluate_subsets(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    subsets: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    registry: Registry = DEFAULT_REGISTRY,
    autocast_dtype: torch.dtype | None = None,
    per_class: ClassMetrics | None = None,
) -> dict[str, dict[str, float | int]]:
    """Loss/accuracy of ``model`` on ``batches`` for each modality subset of ``registry`` (the run's modalities;
    ``subsets`` None = all of them), in one pass over ``batches``.

    ``batches`` may be a one-shot iterator: each batch is moved to ``device`` once and scored under every
    subset. The model's train/eval mode is restored afterwards. ``per_class`` is updated with the scores
    of the subset holding every modality (``registry.full_subset``). A DDP-wrapped ``model`` is scored through
    its inner module: a rank scoring alone would otherwise wait for ever in the wrapper's buffer broadcast (any
    model with buffers: BatchNorm, spectral norm) for the other ranks.
    """
    meters = score_subsets(
        unwrap(model),
        batches,
        subsets,
        device,
        registry=registry,
        autocast_dtype=autocast_dtype,
        per_class=per_class,
    )
    return {subset: meter.result() for subset, meter in meters.items()}


def format_subset_table(results: Mapping[str, Mapping[str, float | int]]) -> str:
    """``evaluate_subsets``'s results as a plain, aligned text table (one row per subset)."""
    header = ("subset", "samples", "accuracy", "loss")
    rows = [
        (subset, str(r["samples"]), f"{r['accuracy']:.4f}", f"{r['loss']:.4f}")
        for subset, r in results.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        # Subset names left-aligned, numbers right-aligned so the decimal points line up.
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def subset_comparison_table(
    subsets: Mapping[str, Mapping[str, Mapping[str, Any]]],
    caps: Mapping[str, float] | None = None,
    registry: Registry = DEFAULT_REGISTRY,
) -> str:
    """Accuracy per modality subset of ``registry`` (rows) of each run (columns); ``subsets[run][subset]
    ["accuracy"]``, and each subset's analytic cap in a second column when ``caps`` (a benchmark's
    ``dataset.json`` caps, keys in any modality order) is given. A subset a run was not scored on is an empty
    cell."""
    names = list(subsets)
    if caps is not None:
        caps = {registry.canonical_subset(k): v for k, v in caps.items() if _known(k, registry)}

    def cell(name: str, subset: str) -> str:
        accuracy = subsets[name].get(subset, {}).get("accuracy")
        return "" if accuracy is None else f"{accuracy:.3f}"

    def cap(subset: str) -> list[str]:
        if caps is None:
            return []
        return [f"{caps[subset]:.3f}" if subset in caps else ""]

    rows = [[subset, *cap(subset), *(cell(n, subset) for n in names)] for subset in registry.subsets()]
    return format_table(["subset", *(["cap"] if caps is not None else []), *names], rows)


def _known(key: str, registry: Registry) -> bool:
    try:
        registry.parse_subset(key)
    except ValueError:
        return False
    return True

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

from mm_ray.columns import LABEL
from mm_ray.modalities.registry import BUILTIN, DEFAULT_MODALITIES, Registry
from mm_ray.tables import format_table
from mm_ray.tasks.classification import ClassMetrics, SubsetMetrics  # noqa: F401 (re-exported: they lived here)
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


def format_class_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A task's per-class table (``ClassMetrics.result``: accuracy per class; multilabel: precision, recall, F1
    and AP per tag; regression: MAE, RMSE, R^2 per target) as text: one row per class, by name."""
    if not rows:
        return format_table(["class", "id"], [])
    columns = list(rows[0])

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    return format_table(columns, [[cell(r[c]) for c in columns] for r in rows])


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
    per_class: Any = None,
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
    per_class: Any = None,
    meter: Callable[[], Any] = SubsetMetrics,
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
        meter=meter,
    )
    return {subset: m.result() for subset, m in meters.items()}


def format_subset_table(results: Mapping[str, Mapping[str, float | int]]) -> str:
    """``evaluate_subsets``'s results as a plain, aligned text table (one row per subset): samples, the task's
    metrics (accuracy; map, micro_f1, ...; r2, mae, rmse), loss."""
    first = next(iter(results.values()), {"accuracy": 0.0})
    metrics = [k for k in first if k not in ("samples", "loss")]
    header = ("subset", "samples", *metrics, "loss")
    rows = [
        (subset, str(r["samples"]), *(f"{r[m]:.4f}" for m in metrics), f"{r['loss']:.4f}")
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

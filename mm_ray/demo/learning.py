"""Trained accuracies against the demo benchmark's analytic references: does the zoo learn what it should?

    rows = learning_rows({"unimodal_image": 0.55, "additive": 0.70, "late_concat": 0.82}, manifest)
    expectations_met(rows)   # every verdict met?

Each preset is compared with the best accuracy any model of its kind can reach on the benchmark
(``dataset.json`` from ``mm-ray make-shards``):

- a unimodal baseline with its modality's cap (``caps["image"]`` ...): it should come within
  ``TOLERANCE`` of it, from below;
- additive fusion with the fitted additive reference: additive logits cannot model the synergistic
  part of the label, so it must stay below the Bayes accuracy;
- every other fusion preset with the cap of the modalities it sees (the Bayes accuracy for all of the
  benchmark's: three, or four in the features variant); the best of them should come within ``TOLERANCE`` of it.

A fusion run scored on every modality subset (``subsets``: the trainer's per-subset evaluation) also gets the
"every subset" verdict: one model that comes within ``TOLERANCE`` of **every** subset's cap, while its accuracy
with all modalities stays within ``FULL_TOLERANCE`` of the best plain fusion run of the table::

    rows = learning_rows(accuracies, manifest, subsets={"film": {"image": {"accuracy": 0.56}, ...}})
    every_subset_holds(rows)   # True when at least one run meets it
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from mm_ray.demo.bayes import subset_key
from mm_ray.tables import format_table

TOLERANCE = 0.03
"""How close (absolute accuracy) a baseline must come to its cap, and the best fusion to the Bayes accuracy."""

FULL_TOLERANCE = 0.01
"""How far (absolute accuracy) under the best plain fusion a model meeting the every-subset verdict may be."""

UNIMODAL_PREFIX = "unimodal_"


@dataclasses.dataclass(frozen=True)
class LearningRow:
    """One trained preset next to its reference."""

    preset: str
    accuracy: float
    reference: str
    reference_accuracy: float
    verdict: str
    every_subset: str = ""
    """The every-subset verdict ("" for runs it does not apply to: baselines, additive, no subset scores)."""

    @property
    def gap_points(self) -> float:
        """Accuracy minus the reference, in percentage points (negative = below it)."""
        return 100.0 * (self.accuracy - self.reference_accuracy)


def reference_for(preset: str, modalities: Sequence[str], manifest: Mapping[str, Any]) -> tuple[str, float]:
    """(name, accuracy) of the best any model of ``preset``'s kind can do on ``modalities``."""
    if preset.startswith(UNIMODAL_PREFIX):
        modality = preset.removeprefix(UNIMODAL_PREFIX)
        return f"{modality} cap", float(manifest["caps"][modality])
    if preset == "additive":
        return "additive reference", float(manifest["additive_fusion"])
    key = subset_key(modalities)
    name = "Bayes" if key == full_subset(manifest) else f"{key} cap"
    return name, float(manifest["caps"][key])


def full_subset(manifest: Mapping[str, Any]) -> str:
    """The manifest's key of the subset holding all its modalities (three, or four in the features variant)."""
    return max(manifest["caps"], key=lambda key: len(key.split("+")))


def learning_rows(
    accuracies: Mapping[str, float],
    manifest: Mapping[str, Any],
    *,
    modalities: Sequence[str] = ("image", "audio", "text"),
    presets: Mapping[str, str] | None = None,
    subsets: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> list[LearningRow]:
    """Rows in the order of ``accuracies``, each with its reference and a verdict on the expectation above.

    ``accuracies`` is keyed by run name; ``presets`` maps a run name to the preset whose reference it gets
    (default: the name itself). Runs named otherwise than their preset (variants such as an auxiliary-loss
    run, an ensemble compared with the additive reference) get the reference but no verdict. ``subsets`` maps
    a run name to its per-subset scores (``subsets[run][subset]["accuracy"]``); every fusion run that has all
    of them (plain or variant) gets the every-subset verdict.
    """
    presets = presets or {}
    subsets = subsets or {}
    plain = {name: a for name, a in accuracies.items() if presets.get(name, name) == name}
    bayes = float(manifest["caps"][subset_key(modalities)])
    fusions = {p: a for p, a in plain.items() if not p.startswith(UNIMODAL_PREFIX) and p != "additive"}
    best_fusion = max(fusions, key=fusions.get) if fusions else None
    # What the every-subset verdict's full accuracy is held to.
    best = fusions[best_fusion] if best_fusion else bayes
    rows = []
    for name, accuracy in accuracies.items():
        preset = presets.get(name, name)
        reference, ref_acc = reference_for(preset, modalities, manifest)
        if name != preset:
            verdict = ""
        elif preset.startswith(UNIMODAL_PREFIX):
            verdict = _within(accuracy, ref_acc)
        elif preset == "additive":
            verdict = "ok: below Bayes" if accuracy < bayes else "MISSED: not below Bayes"
        elif preset == best_fusion:
            verdict = "best fusion, " + _within(accuracy, ref_acc)
        else:
            verdict = ""
        fusion = not preset.startswith(UNIMODAL_PREFIX) and preset != "additive"
        every = every_subset_verdict(subsets[name], manifest, best) if fusion and name in subsets else ""
        rows.append(LearningRow(name, float(accuracy), reference, ref_acc, verdict, every))
    return rows


def every_subset_verdict(
    scores: Mapping[str, Mapping[str, Any]], manifest: Mapping[str, Any], best_fusion: float
) -> str:
    """Whether one model is near every subset's cap: each subset's accuracy at most ``TOLERANCE`` under its cap
    (above is noise, not a miss), and the all-modality accuracy at most ``FULL_TOLERANCE`` under
    ``best_fusion``. Names the worst subset either way; "" when a subset of the manifest was not scored."""
    caps = {key: float(cap) for key, cap in manifest["caps"].items()}
    if any(key not in scores or scores[key].get("accuracy") is None for key in caps):
        return ""
    gaps = {key: float(scores[key]["accuracy"]) - cap for key, cap in caps.items()}
    worst = min(gaps, key=gaps.get)
    full = full_subset(manifest)
    full_gap = float(scores[full]["accuracy"]) - best_fusion
    points, full_points = 100 * TOLERANCE, 100 * FULL_TOLERANCE
    if gaps[worst] < -TOLERANCE:
        misses = sum(gap < -TOLERANCE for gap in gaps.values())
        return f"MISSED: {misses} subset(s) over {points:.0f} pts under cap, worst {worst} {100 * gaps[worst]:+.1f}"
    if full_gap < -FULL_TOLERANCE:
        return (
            f"MISSED: all modalities {100 * full_gap:+.1f} pts from the best fusion (limit {full_points:.0f})"
        )
    return f"ok: every subset within {points:.0f} pts (worst {worst} {100 * gaps[worst]:+.1f})"


def every_subset_holds(rows: Sequence[LearningRow]) -> bool | None:
    """True when at least one row meets the every-subset verdict; None when no row was judged on it."""
    judged = [row.every_subset for row in rows if row.every_subset]
    return any(v.startswith("ok") for v in judged) if judged else None


def expectations_met(rows: Sequence[LearningRow]) -> bool:
    """True when every row with a verdict met it."""
    return all(not row.verdict or "MISSED" not in row.verdict for row in rows)


def _within(accuracy: float, reference: float) -> str:
    points = 100 * TOLERANCE
    if abs(accuracy - reference) <= TOLERANCE:
        return f"ok: within {points:.0f} pts"
    return f"MISSED: not within {points:.0f} pts"


def learning_table(rows: Sequence[LearningRow]) -> str:
    """Each trained preset's held-out accuracy next to its analytic reference; an "every subset" column when a
    row was judged on it."""
    every = any(r.every_subset for r in rows)
    body = [
        [
            r.preset,
            f"{r.accuracy:.3f}",
            r.reference,
            f"{r.reference_accuracy:.3f}",
            f"{r.gap_points:+.1f}",
            r.verdict,
            *([r.every_subset] if every else []),
        ]
        for r in rows
    ]
    header = ["preset", "val accuracy", "reference", "reference acc", "gap (pts)", "expectation"]
    return format_table([*header, *(["every subset"] if every else [])], body)


def caps_table(manifest: Mapping[str, Any]) -> str:
    """The benchmark's reference accuracies as a table (Bayes, every subset, additive reference)."""
    rows = [[subset, f"{acc:.4f}"] for subset, acc in manifest["caps"].items()]
    rows.append(["additive fusion (fitted)", f"{manifest['additive_fusion']:.4f}"])
    rows.append(["chance", f"{manifest['chance_accuracy']:.4f}"])
    return format_table(["modalities", "best achievable accuracy"], rows)

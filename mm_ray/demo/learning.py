"""Trained accuracies against the demo benchmark's analytic references: does the zoo learn what it should?

    rows = learning_rows({"unimodal_image": 0.55, "additive": 0.70, "late_concat": 0.82}, manifest)
    expectations_met(rows)   # every verdict met?

Each preset is compared with the best accuracy any model of its kind can reach on the benchmark
(``dataset.json`` from ``mm-ray make-shards``):

- a unimodal baseline with its modality's cap (``caps["image"]`` ...): it should come within
  ``TOLERANCE`` of it, from below;
- additive fusion with the fitted additive reference: additive logits cannot model the synergistic
  part of the label, so it must stay below the Bayes accuracy;
- every other fusion preset with the cap of the modalities it sees (the Bayes accuracy for all three);
  the best of them should come within ``TOLERANCE`` of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from mm_ray.demo.bayes import subset_key
from mm_ray.tables import format_table

TOLERANCE = 0.03
"""How close (absolute accuracy) a baseline must come to its cap, and the best fusion to the Bayes accuracy."""

UNIMODAL_PREFIX = "unimodal_"


@dataclasses.dataclass(frozen=True)
class LearningRow:
    """One trained preset next to its reference."""

    preset: str
    accuracy: float
    reference: str
    reference_accuracy: float
    verdict: str

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
    name = "Bayes" if len(set(modalities)) == 3 else f"{key} cap"
    return name, float(manifest["caps"][key])


def learning_rows(
    accuracies: Mapping[str, float],
    manifest: Mapping[str, Any],
    *,
    modalities: Sequence[str] = ("image", "audio", "text"),
    presets: Mapping[str, str] | None = None,
) -> list[LearningRow]:
    """Rows in the order of ``accuracies``, each with its reference and a verdict on the expectation above.

    ``accuracies`` is keyed by run name; ``presets`` maps a run name to the preset whose reference it gets
    (default: the name itself). Runs named otherwise than their preset (variants such as an auxiliary-loss
    run, an ensemble compared with the additive reference) get the reference but no verdict.
    """
    presets = presets or {}
    plain = {name: a for name, a in accuracies.items() if presets.get(name, name) == name}
    bayes = float(manifest["caps"][subset_key(modalities)])
    fusions = {p: a for p, a in plain.items() if not p.startswith(UNIMODAL_PREFIX) and p != "additive"}
    best_fusion = max(fusions, key=fusions.get) if fusions else None
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
        rows.append(LearningRow(name, float(accuracy), reference, ref_acc, verdict))
    return rows


def expectations_met(rows: Sequence[LearningRow]) -> bool:
    """True when every row with a verdict met it."""
    return all(not row.verdict or "MISSED" not in row.verdict for row in rows)


def _within(accuracy: float, reference: float) -> str:
    points = 100 * TOLERANCE
    if abs(accuracy - reference) <= TOLERANCE:
        return f"ok: within {points:.0f} pts"
    return f"MISSED: not within {points:.0f} pts"


def learning_table(rows: Sequence[LearningRow]) -> str:
    """Each trained preset's held-out accuracy next to its analytic reference."""
    body = [
        [
            r.preset,
            f"{r.accuracy:.3f}",
            r.reference,
            f"{r.reference_accuracy:.3f}",
            f"{r.gap_points:+.1f}",
            r.verdict,
        ]
        for r in rows
    ]
    return format_table(
        ["preset", "val accuracy", "reference", "reference acc", "gap (pts)", "expectation"], body
    )


def caps_table(manifest: Mapping[str, Any]) -> str:
    """The benchmark's reference accuracies as a table (Bayes, every subset, additive reference)."""
    rows = [[subset, f"{acc:.4f}"] for subset, acc in manifest["caps"].items()]
    rows.append(["additive fusion (fitted)", f"{manifest['additive_fusion']:.4f}"])
    rows.append(["chance", f"{manifest['chance_accuracy']:.4f}"])
    return format_table(["modalities", "best achievable accuracy"], rows)

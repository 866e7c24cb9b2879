"""An export's model with its preprocessing, one process, no Ray: samples' member bytes in, predictions out.

    predictor = SamplePredictor.open("exports/demo")
    predictor.predict([{"jpg": jpeg_bytes, "txt": b"a red bus", "wav": wav_bytes}])
    # [{"predicted": "bus", "probabilities": [...], "present": {...}}]  or, for a sample set aside,
    # [{"error": "corrupt_image", "detail": "..."}]

A sample is what a shard holds for one key: member extension -> bytes. It goes through the same steps as in the
ingest pools: the reader's member mapping and size limits (``mm_ray.data.members.assemble``), then each modality's
preprocessor with the run's settings and tokenizer (from the export's ``model.json``), then the model. A sample the
pipeline would quarantine comes back as ``{"error": reason, "detail": ...}`` and costs the others nothing; a
modality missing from a sample is what the model was trained to handle (its learned "missing" embedding), unless
the run listed it in ``data.required_modalities``.

The plain core of ``mm-ray serve`` (``mm_ray.inference.serve_app`` puts it behind Ray Serve).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mm_ray import columns as C
from mm_ray.data.members import assemble, member_map
from mm_ray.data.raw import RawSample
from mm_ray.inference.export import ExportedModel, load_exported
from mm_ray.inference.outputs import prediction_columns
from mm_ray.modalities.registry import extensions_of, modalities_of, settings_of
from mm_ray.modalities.spec import PreprocessContext
from mm_ray.train.loop import to_device

Sample = Mapping[str, bytes]
"""Member extension (``jpg``, ``txt``, ...) -> its bytes."""


class SamplePredictor:
    """See the module docstring. ``open`` loads an export under the trust rule of ``load_exported``."""

    def __init__(self, exported: ExportedModel, plugins: Sequence[str] = ()) -> None:
        cfg = exported.config(plugins)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, label_required=False))
        self.registry = modalities_of(cfg)
        self.members = member_map(cfg, self.registry)
        self.extensions = {ext for _, exts in self.members.extensions for ext in exts}
        context = {
            s.name: PreprocessContext(extensions_of(cfg, s), None, exported.tokenizer_json)
            for s in self.registry
        }
        self.stages = [
            s.preprocessor(**s.preprocessor_kwargs(settings_of(cfg, s), context[s.name]))
            for s in self.registry
        ]
        self.model = exported.model
        self.classes = exported.classes
        self.task = cfg.task
        self.modalities = exported.spec.model.modalities

    @classmethod
    def open(
        cls, directory: str | Path, *, builder: str | None = None, plugins: Sequence[str] = ()
    ) -> SamplePredictor:
        return cls(load_exported(directory, builder=builder, plugins=plugins), plugins)

    def predict(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        """One answer per sample, in order: its prediction, or the reason it was set aside."""
        answers: list[dict[str, Any] | None] = [None] * len(samples)
        rows, where = [], []
        for i, members in enumerate(samples):
            row, records = assemble(RawSample("request", str(i), dict(members)), self.members)
            if row is None:
                answers[i] = {"error": records[-1].reason.value, "detail": records[-1].detail}
            else:
                rows.append(row)
                where.append(i)
        if rows:
            for i, answer in zip(where, self._decode_and_score(rows), strict=True):
                answers[i] = answer
        return answers  # type: ignore[return-value]

    def _decode_and_score(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        batch: dict[str, np.ndarray] = {}
        for name in rows[0]:
            column = np.empty(len(rows), dtype=object)
            column[:] = [row[name] for row in rows]
            batch[name] = column
        for stage in self.stages:
            batch = stage(batch)
        reasons, details = batch.pop(C.REJECT), batch.pop(C.REJECT_DETAIL)
        good = np.flatnonzero(reasons == "")
        answers = [{"error": str(reasons[i]), "detail": str(details[i])} for i in range(len(rows))]
        if good.size:
            scored = {k: v[good] for k, v in batch.items() if isinstance(v, np.ndarray) and v.dtype != object}
            with torch.inference_mode():
                logits = self.model(to_device(scored, "cpu"))
            columns = prediction_columns(logits, self.classes, self.task)
            for j, i in enumerate(good):
                answer = {name: _plain(values[j]) for name, values in columns.items()}
                answer["present"] = {
                    m: bool(batch[self.registry[m].presence_column][i]) for m in self.modalities
                }
                answers[i] = answer
        return answers


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value

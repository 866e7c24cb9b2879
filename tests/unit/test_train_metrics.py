"""Per-modality-subset metrics: masking, the accumulator's arithmetic, evaluation and the table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mm_ray.train.metrics import (
    DEFAULT_REGISTRY,
    SubsetMetrics,
    evaluate_subsets,
    format_subset_table,
    mask_modalities,
    parse_subset,
)

SUBSETS = DEFAULT_REGISTRY.subsets()

B = 4


class RecordingModel(torch.nn.Module):
    """Remembers the presence columns and data it was called with; predicts class = number of modalities."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, torch.Tensor]] = []
        self.modes: list[bool] = []

    def forward(self, batch):
        self.calls.append({k: v.clone() for k, v in batch.items()})
        self.modes.append(self.training)
        count = batch["has_image"].long() + batch["has_audio"].long() + batch["has_text"].long()
        return F.one_hot(count, 4).float() * 10.0


def _batch(has_audio: list[bool] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "__key__": np.array([f"k{i}" for i in range(B)], dtype=object),
        "__shard__": np.array(["s.tar"] * B),
        "image": rng.integers(1, 255, (B, 3, 8, 8), dtype=np.uint8),
        "input_ids": rng.integers(1, 100, (B, 5), dtype=np.int32),
        "attention_mask": np.ones((B, 5), dtype=np.int8),
        "audio": rng.standard_normal((B, 4, 6)).astype(np.float32) + 5.0,
        "label": np.full(B, 3, dtype=np.int64),
        "has_image": np.ones(B, dtype=bool),
        "has_text": np.ones(B, dtype=bool),
        "has_audio": np.array(has_audio if has_audio is not None else [True] * B),
    }


def test_parse_subset():
    assert parse_subset("image+text") == {"image", "text"}
    assert [len(parse_subset(s)) for s in SUBSETS] == [1, 1, 1, 2, 2, 2, 3]
    for bad in ("video", "image+image", "", "image+"):
        with pytest.raises(ValueError):
            parse_subset(bad)


def test_mask_turns_off_exactly_the_masked_modalities():
    batch = {k: torch.from_numpy(v) for k, v in _batch().items() if v.dtype != object and v.dtype.kind != "U"}
    masked = mask_modalities(batch, {"image"})
    assert masked["has_image"].all() and not masked["has_audio"].any() and not masked["has_text"].any()
    assert masked["has_audio"].dtype == torch.bool
    assert torch.equal(masked["image"], batch["image"])
    # Masked modalities look like the data plane's "absent": zeros in the model-ready columns.
    assert not masked["audio"].any() and not masked["input_ids"].any() and not masked["attention_mask"].any()
    assert batch["has_audio"].all() and batch["audio"].any()  # the input batch is untouched


def test_evaluate_subsets_shows_the_model_each_subset():
    model = RecordingModel().train()
    results = evaluate_subsets(model, [_batch()], SUBSETS, "cpu")
    assert list(results) == list(SUBSETS)
    assert len(model.calls) == len(SUBSETS)
    for subset, seen in zip(SUBSETS, model.calls, strict=True):
        keep = parse_subset(subset)
        for modality in ("image", "audio", "text"):
            assert bool(seen[f"has_{modality}"].all()) == (modality in keep), (subset, modality)
            assert bool(seen[f"has_{modality}"].any()) == (modality in keep), (subset, modality)
        assert "__key__" not in seen and "__shard__" not in seen
    assert model.modes == [False] * len(SUBSETS)  # evaluated in eval mode ...
    assert model.training  # ... and the caller's mode is restored
    # The model predicts "number of present modalities"; the label is 3, so only the full subset is right.
    assert results["image+text+audio"]["accuracy"] == 1.0
    assert all(results[s]["accuracy"] == 0.0 for s in SUBSETS[:-1])
    assert all(r["samples"] == B for r in results.values())


def test_a_modality_the_sample_lacked_stays_absent():
    model = RecordingModel()
    evaluate_subsets(model, iter([_batch(has_audio=[True, False, True, False])]), ["audio"], "cpu")
    assert model.calls[0]["has_audio"].tolist() == [True, False, True, False]


def test_subset_metrics_math():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = torch.tensor([0, 0, 0])
    meter = SubsetMetrics()
    meter.update(logits[:2], labels[:2])
    meter.update(logits[2:], labels[2:])
    expected_losses = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(1)), math.log(1 + math.exp(-3))]
    result = meter.result()
    assert result["samples"] == 3
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["loss"] == pytest.approx(sum(expected_losses) / 3)


def test_subset_metrics_empty_is_nan():
    result = SubsetMetrics().result()
    assert result["samples"] == 0 and math.isnan(result["loss"]) and math.isnan(result["accuracy"])


def test_format_subset_table_is_aligned():
    results = {
        "image": {"accuracy": 0.5, "loss": 1.25, "samples": 10},
        "image+text+audio": {"accuracy": 0.987654, "loss": 0.03, "samples": 1000},
    }
    lines = format_subset_table(results).splitlines()
    assert lines[0].split() == ["subset", "samples", "accuracy", "loss"]
    assert len({len(line) for line in lines}) == 1  # every row has the same width
    assert lines[2].split() == ["image", "10", "0.5000", "1.2500"]
    assert lines[3].split() == ["image+text+audio", "1000", "0.9877", "0.0300"]
    assert lines[2].index("0.5000") == lines[3].index("0.9877")


def test_subset_comparison_table_puts_each_subsets_cap_beside_the_runs():
    from mm_ray.train.metrics import subset_comparison_table

    runs = {
        "film": {s: {"accuracy": 0.5} for s in SUBSETS},
        "text_only": {"text": {"accuracy": 0.25}},
    }
    caps = {s: 0.75 for s in SUBSETS}

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    lines = subset_comparison_table(runs, caps=caps).splitlines()
    assert cells(lines[0]) == ["subset", "cap", "film", "text_only"]
    by_subset = {cells(line)[0]: cells(line) for line in lines[2:]}
    assert by_subset["text"] == ["text", "0.750", "0.500", "0.250"]
    assert by_subset["image+audio"] == ["image+audio", "0.750", "0.500", ""]  # not scored: an empty cell
    assert cells(subset_comparison_table(runs).splitlines()[0]) == ["subset", "film", "text_only"]

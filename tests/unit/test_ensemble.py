"""Model-level fusion: averaging separately trained checkpoints' predictions (``mm_ray.train.ensemble``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tiny_fusion import KWARGS
from torch import nn

from mm_ray.config.load import ConfigError, load_config
from mm_ray.models import ModelSpec, build_model
from mm_ray.train.checkpoint import LoadedCheckpoint
from mm_ray.train.ensemble import PredictionAverage, check_compatible
from mm_ray.train.metrics import DEFAULT_REGISTRY, evaluate_subsets
from mm_ray.train.spec import LoopConfig

SUBSETS = DEFAULT_REGISTRY.subsets()


class Fixed(nn.Module):
    """A model that predicts the same logits for every sample."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits.expand(batch["label"].shape[0], -1)


def _batch(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
        "input_ids": torch.randint(1, 30, (n, 8), dtype=torch.int32, generator=g),
        "attention_mask": torch.ones(n, 8, dtype=torch.int8),
        "audio": torch.randn(n, 8, 11, generator=g),
        "label": torch.randint(0, 3, (n,), generator=g),
        "has_image": torch.ones(n, dtype=torch.bool),
        "has_text": torch.ones(n, dtype=torch.bool),
        "has_audio": torch.ones(n, dtype=torch.bool),
    }


def test_the_ensemble_averages_probabilities_not_logits() -> None:
    a, b = [4.0, 0.0, 0.0], [0.0, 0.0, 1.0]
    out = PredictionAverage([Fixed(a), Fixed(b)])(_batch())
    expected = (torch.tensor(a).softmax(-1) + torch.tensor(b).softmax(-1)) / 2
    assert torch.allclose(out.exp()[0], expected, atol=1e-6)
    assert torch.allclose(out.exp().sum(-1), torch.ones(6))  # log-probabilities of a distribution
    weighted = PredictionAverage([Fixed(a), Fixed(b)], weights=[0.0, 1.0])(_batch())
    assert torch.allclose(weighted.exp()[0], torch.tensor(b).softmax(-1), atol=1e-6)


def test_an_ensemble_of_one_model_scores_like_the_model() -> None:
    model = build_model("late_concat", **KWARGS, seed=1).eval()
    single = evaluate_subsets(model, [_batch()], SUBSETS, device="cpu")
    alone = evaluate_subsets(PredictionAverage([model]).eval(), [_batch()], SUBSETS, device="cpu")
    for subset in SUBSETS:
        assert alone[subset]["accuracy"] == single[subset]["accuracy"]
        assert alone[subset]["loss"] == pytest.approx(single[subset]["loss"], rel=1e-5)


def test_unimodal_members_together_use_every_modality() -> None:
    members = [
        build_model(f"unimodal_{m}", **KWARGS, seed=i).eval() for i, m in enumerate(("image", "audio"))
    ]
    ensemble = PredictionAverage(members).eval()
    batch = _batch()
    with torch.no_grad():
        before = ensemble(batch)
        batch["audio"] = torch.randn(batch["audio"].shape, generator=torch.Generator().manual_seed(9))
        after = ensemble(batch)
    assert not torch.allclose(before, after)  # the audio member's vote moved


def _ckpt(name: str, **changes) -> LoadedCheckpoint:
    spec = ModelSpec.from_dict({"preset": "late_concat", **KWARGS, **changes})
    loop = LoopConfig(model=spec, resolved=load_config())
    return LoadedCheckpoint(Path(name), {"config": loop.to_state(), "epoch": 1}, "{}")


def test_members_must_read_batches_the_same_way() -> None:
    check_compatible([_ckpt("a"), _ckpt("b", width=32)])  # sizes inside the model may differ
    with pytest.raises(ConfigError, match=r"--ensemble: b reads image as \[3, 32, 32\], a as \[3, 16, 16\]"):
        check_compatible([_ckpt("a"), _ckpt("b", image_size=32)])
    with pytest.raises(ConfigError, match="another tokenizer"):
        check_compatible([_ckpt("a"), dataclasses.replace(_ckpt("b"), tokenizer_json='{"v": 2}')])

"""Scoring a data-parallel model scores its inner module: the Train workers validate on rank 0 alone, where a DDP
wrapper's own forward (a buffer broadcast the other ranks never join) would wait for ever. The slow two-process
test (``test_ddp_scoring``) shows the hang with real DDP; this one needs no second process: a wrapper whose own
forward fails stands for it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mm_ray.train.metrics import DEFAULT_REGISTRY, evaluate_subsets

B = 6


class _Counting(nn.Module):
    """Logits from the present modalities' mean inputs, through a BatchNorm (a module with buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3)
        self.head = nn.Linear(3, 4)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        features = torch.stack(
            [batch["image"].float().mean(dim=(1, 2, 3)), batch["audio"].mean(dim=(1, 2)),
             batch["input_ids"].float().mean(dim=1)], dim=1,
        )  # fmt: skip
        return self.head(self.norm(features))


class _ForwardOnOneRankHangs(nn.Module):
    """What ``DistributedDataParallel`` looks like to one rank scoring alone: the model as ``.module``, and a
    forward that cannot return."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch):
        raise AssertionError("scored through the wrapper: on one rank its buffer broadcast waits for ever")


def _batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "image": rng.integers(0, 255, (B, 3, 4, 4), dtype=np.uint8),
        "input_ids": rng.integers(1, 50, (B, 5), dtype=np.int32),
        "attention_mask": np.ones((B, 5), dtype=np.int8),
        "audio": rng.standard_normal((B, 2, 3)).astype(np.float32),
        "label": rng.integers(0, 4, B).astype(np.int64),
        **{f"has_{m}": np.ones(B, dtype=bool) for m in ("image", "text", "audio")},
    }


def test_a_wrapped_model_is_scored_through_its_inner_module_with_the_same_scores() -> None:
    torch.manual_seed(0)
    inner = _Counting()
    inner(  # give the BatchNorm running statistics of its own (eval mode uses them)
        {k: torch.from_numpy(v) for k, v in _batch().items()}
    )
    alone = evaluate_subsets(inner, [_batch()], DEFAULT_REGISTRY.subsets())
    wrapped = evaluate_subsets(_ForwardOnOneRankHangs(inner), [_batch()], DEFAULT_REGISTRY.subsets())
    assert wrapped == alone and all(r["samples"] == B for r in wrapped.values())

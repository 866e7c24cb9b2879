"""Model-level fusion: average the predictions of separately trained checkpoints (an ensemble).

The baseline the fusion presets must beat: train one unimodal model per modality, then average their class
probabilities. ``mm-ray evaluate CKPT SHARDS... --ensemble CKPT2 CKPT3`` scores it per modality subset like
any single checkpoint::

    from mm_ray.train.ensemble import PredictionAverage, check_compatible
    check_compatible(checkpoints)                          # same tokenizer and input shapes, else ConfigError
    model = PredictionAverage([c.restore_model() for c in checkpoints])
    log_probs = model(batch)                               # [B, classes]: log of the mean probability

The output is log-probabilities: ``cross_entropy`` on them is the ensemble's negative log-likelihood and
``argmax`` its prediction, so the per-subset metrics treat it like any model's logits. A member that sees
none of a sample's modalities (a unimodal model on a subset without its modality) still votes, with what its
learned "missing" embedding predicts, as it would in deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mm_ray.config.load import ConfigError


class PredictionAverage(nn.Module):
    """Averages the members' class probabilities (optionally weighted); returns their log."""

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        weights = [1.0] * len(models) if weights is None else list(weights)
        if len(weights) != len(models) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"need one non-negative weight per model, not all zero; got {weights}")
        self.members = nn.ModuleList(models)
        self.register_buffer("weights", torch.tensor(weights) / sum(weights))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pairs = zip(self.weights, self.members, strict=True)
        probs = sum(w * member(batch).float().softmax(dim=-1) for w, member in pairs)
        # The floor keeps log finite where every member is certain of another class.
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def check_compatible(checkpoints: Sequence[Any]) -> None:
    """Raise ``ConfigError`` unless every checkpoint (``LoadedCheckpoint``) reads batches the first one's way:
    the same tokenizer and the same input shapes and classes. The message names the checkpoint and argument."""
    first = checkpoints[0]
    expected = first.loop.model.inputs()
    for other in checkpoints[1:]:
        if other.tokenizer_json != first.tokenizer_json:
            raise ConfigError(
                f"--ensemble: {other.directory} was trained with another tokenizer than {first.directory}; "
                "ensemble members must be trained on the same cache"
            )
        if other.classes != first.classes:
            raise ConfigError(
                f"--ensemble: {other.directory} was trained with other class names than {first.directory}"
            )
        inputs = other.loop.model.inputs()
        theirs, ours = inputs.pop("shapes"), expected["shapes"]
        for column in sorted(set(theirs) & set(ours)):
            if list(theirs[column]) != list(ours[column]):
                raise ConfigError(
                    f"--ensemble: {other.directory} reads {column} as {list(theirs[column])}, {first.directory} "
                    f"as {list(ours[column])}; ensemble members must be trained on the same cache"
                )
        for name, value in inputs.items():
            if value != expected[name]:
                raise ConfigError(
                    f"--ensemble: {other.directory} has {name}={value}, {first.directory} has "
                    f"{name}={expected[name]}; ensemble members must be trained on the same cache"
                )

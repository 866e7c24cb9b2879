"""Optimizer parameter groups with one learning rate per modality's encoder.

    groups = param_groups(model, lr=1e-3, lr_by_modality={"text": 1e-4})
    optimizer = torch.optim.AdamW(groups)

A dominant modality can swamp the others (the modality-imbalance problem); a lower learning
rate for its encoder is the simplest counter. Each group carries a ``"name"`` key (``image``,
``text``, ``audio`` or ``fusion``) that the optimizer keeps, so schedulers and logs can find it.
"""

from __future__ import annotations

from typing import Any

from mm_ray.models.model import FusionModel


def param_groups(
    model: FusionModel, lr: float, lr_by_modality: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """One group per encoder (with its modality's missing embedding) plus one ``fusion`` group.

    Modalities absent from ``lr_by_modality`` use ``lr``; naming a modality the model does not
    have is an error (it is almost certainly a typo in a config). Every trainable parameter is in
    exactly one group.
    """
    lr_by_modality = lr_by_modality or {}
    unknown = set(lr_by_modality) - set(model.modalities)
    if unknown:
        raise ValueError(f"lr_by_modality names {sorted(unknown)}, the model has {list(model.modalities)}")
    groups = []
    taken: set[int] = set()
    for m in model.modalities:
        # The missing embedding stands in for this encoder's output, so it learns at the same rate. The
        # generative models (mvae, cgan) have encoders but no missing embeddings.
        missing = getattr(model, "missing", {})
        params = [*model.encoders[m].parameters(), *([missing[m]] if m in missing else [])]
        taken.update(id(p) for p in params)
        groups.append({"name": m, "params": params, "lr": lr_by_modality.get(m, lr)})
    rest = [p for p in model.parameters() if id(p) not in taken]
    groups.append({"name": "fusion", "params": rest, "lr": lr})
    return [g for g in groups if g["params"]]

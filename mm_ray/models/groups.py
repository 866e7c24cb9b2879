"""Optimizer parameter groups with one learning rate per modality's encoder.

    groups = param_groups(model, lr=1e-3, lr_by_modality={"text": 1e-4})
    optimizer = torch.optim.AdamW(groups)

A dominant modality can swamp the others (the modality-imbalance problem); a lower learning
rate for its encoder is the simplest counter. Each group carries a ``"name"`` key (the modality's, or
``fusion``) that the optimizer keeps, so schedulers and logs can find it.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def _encoder_modalities(model: nn.Module) -> tuple[str, ...]:
    """The modalities of the model's ``encoders`` ModuleDict (a ``FusionModel``, or a ``model.builder``
    module that has one); () for a module without: it then has the ``fusion`` group only."""
    encoders = getattr(model, "encoders", None)
    if not isinstance(encoders, nn.ModuleDict):
        return ()
    return tuple(encoders)


def param_groups(
    model: nn.Module, lr: float, lr_by_modality: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """One group per encoder (with its modality's missing embedding) plus one ``fusion`` group (everything
    else; all of a ``model.builder`` module without an ``encoders`` ModuleDict).

    Modalities absent from ``lr_by_modality`` use ``lr``; naming a modality the model does not
    have is an error (it is almost certainly a typo in a config). Every trainable parameter is in
    exactly one group.
    """
    lr_by_modality = lr_by_modality or {}
    modalities = _encoder_modalities(model)
    unknown = set(lr_by_modality) - set(modalities)
    if unknown:
        raise ValueError(f"lr_by_modality names {sorted(unknown)}, the model has {list(modalities)}")
    groups = []
    taken: set[int] = set()
    missing = getattr(model, "missing", None)
    for m in modalities:
        # The missing embedding stands in for this encoder's output, so it learns at the same rate.
        params = list(model.encoders[m].parameters())
        if isinstance(missing, nn.ParameterDict) and m in missing:
            params.append(missing[m])
        taken.update(id(p) for p in params)
        groups.append({"name": m, "params": params, "lr": lr_by_modality.get(m, lr)})
    rest = [p for p in model.parameters() if id(p) not in taken]
    groups.append({"name": "fusion", "params": rest, "lr": lr})
    return [g for g in groups if g["params"]]

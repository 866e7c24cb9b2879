"""Train-time augmentation of model-ready torch batches, over the run's modalities.

Each modality's spec augments its own main column (``ModalitySpec.augment``: images are cropped, flipped,
rotated and colour jittered; audio features get a random gain and time shift; text is left as it is). Build
one ``Augmenter`` per worker and wrap each epoch's training batches; validation batches pass through
``augment_split`` untouched::

    augmenter = build_augmenter(loop.augment, loop.resolved, seed=0, rank=0)     # None when disabled
    for epoch in range(epochs):
        batches = augment_split(loader(epoch), augmenter, split="train", epoch=epoch)

A batch is the dict the trainer gets from ``iter_torch_batches``; rows whose modality is missing keep their
zeros. The randomness comes from one ``torch.Generator`` per epoch seeded from ``(seed, rank, epoch)``, drawn by
the modalities in canonical order: the same seed and the same input batches give the same augmented batches,
and a run resumed from a checkpoint draws what the first attempt would have drawn for that epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mm_ray.config.schema import AugmentConfig, Config
from mm_ray.modalities.registry import modalities_of, settings_of
from mm_ray.modalities.spec import ModalitySpec


class Augmenter:
    """Random per-sample augmentation of training batches.

    ``modalities``: ``(spec, its settings)`` of every modality whose column is augmented, canonical order.
    ``augmenter(batch, generator)`` augments one batch with draws from ``generator``; ``apply(batches, epoch)``
    augments an epoch's batches with the generator of ``(seed, rank, epoch)``.
    """

    def __init__(
        self,
        augment: AugmentConfig,
        modalities: Sequence[tuple[ModalitySpec, Any]],
        *,
        seed: int = 0,
        rank: int = 0,
    ):
        if not 0 < augment.crop_min_scale <= 1 or augment.crop_max_aspect < 1:
            raise ValueError(
                "need 0 < crop_min_scale <= 1 and crop_max_aspect >= 1, got "
                f"{augment.crop_min_scale}, {augment.crop_max_aspect}"
            )
        self.augment = augment
        self.modalities = tuple(modalities)
        self.seed, self.rank = seed, rank

    def generator(self, epoch: int) -> torch.Generator:
        """The epoch's generator: seeded from ``(seed, rank, epoch)`` through numpy's ``SeedSequence``, so
        nearby seeds, ranks and epochs still give unrelated streams."""
        state = np.random.SeedSequence([self.seed, self.rank, epoch]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def apply(self, batches: Iterable[Mapping[str, Any]], epoch: int) -> Iterator[dict[str, Any]]:
        """Augment one epoch's batches, lazily, in order."""
        generator = self.generator(epoch)
        for batch in batches:
            yield self(batch, generator)

    def __call__(self, batch: Mapping[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """A new batch dict with every modality's main column augmented (other columns are the same objects)."""
        out = dict(batch)
        for spec, settings in self.modalities:
            if spec.column in batch:
                present = batch.get(spec.presence_column)
                out[spec.column] = spec.augment(
                    batch[spec.column], present, generator, self.augment, settings
                )
        return out


def build_augmenter(augment: AugmentConfig, cfg: Config, *, seed: int, rank: int) -> Augmenter | None:
    """The ``Augmenter`` of the ``train.augment`` settings ``augment`` over the modalities of ``cfg`` (a run's
    resolved config: its settings say how the data was made, e.g. how a gain shows in MFCCs), or None when
    ``augment.enabled`` is false."""
    if not augment.enabled:
        return None
    modalities = [(spec, settings_of(cfg, spec)) for spec in modalities_of(cfg)]
    return Augmenter(augment, modalities, seed=seed, rank=rank)


def augment_split(
    batches: Iterable[Mapping[str, Any]], augmenter: Augmenter | None, *, split: str, epoch: int
) -> Iterable[Mapping[str, Any]]:
    """``batches`` augmented when ``split`` is ``"train"`` and there is an augmenter; otherwise the very same
    iterable: validation must score the data as it is."""
    if augmenter is None or split != "train":
        return batches
    return augmenter.apply(batches, epoch)

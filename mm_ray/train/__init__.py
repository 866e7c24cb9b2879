"""The pure-PyTorch training core: one epoch of training, lr schedules, per-modality-subset evaluation.

No Ray in here; the Ray Train adapter calls these per worker. Usage::

    from mm_ray.train import evaluate_subsets, format_subset_table, seed_everything, train_epoch, warmup_cosine

    seed_everything(0)
    scheduler = warmup_cosine(optimizer, warmup_steps=100, total_steps=total_steps)
    stats = train_epoch(model, train_batches, optimizer, scheduler, device=device)
    print(format_subset_table(evaluate_subsets(model, val_batches, device=device)))
"""

from mm_ray.train.loop import seed_everything, to_device, train_epoch, train_step
from mm_ray.train.metrics import (
    SubsetMetrics,
    evaluate_subsets,
    format_subset_table,
    mask_modalities,
    parse_subset,
)
from mm_ray.train.schedule import warmup_cosine

__all__ = [
    "SubsetMetrics",
    "evaluate_subsets",
    "format_subset_table",
    "mask_modalities",
    "parse_subset",
    "seed_everything",
    "to_device",
    "train_epoch",
    "train_step",
    "warmup_cosine",
]

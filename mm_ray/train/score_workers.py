"""Scoring a checkpoint on a cluster: N scoring actors, each on its part of the stream, their sums added up.

    meters, per_class = score_on_workers(ckpt, dataset, workers=4, batch_size=256, num_cpus=1.0, num_gpus=0)

The path a training run's distributed validation takes (``mm_ray.train.worker``), outside Ray Train: the
dataset is split row for row (``streaming_split(equal=False)``: every sample scored once), each actor
holds one copy of the model and scores its part with ``score_subsets``, and returns its accumulators'
states (``mm_ray.train.mergeable``); the driver adds them up. The numbers equal one process scoring the
whole set (up to float summation order); the time divides by the actors, which may sit on any node (a GPU
each where ``num_gpus`` says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mm_ray.tasks import task_of
from mm_ray.train.mergeable import merge_states


class SubsetScorer:
    """One scoring actor's work (a plain class; Ray runs it as an actor): the checkpoint's model (rebuilt by
    ``LoadedCheckpoint.restore_model``, under the trust the caller gave it on opening), scoring the batches of
    one part of a split dataset."""

    def __init__(self, ckpt: Any, device: str) -> None:
        from mm_ray.modalities.registry import modalities_of
        from mm_ray.train.autocast import scoring_dtype

        loop = ckpt.loop
        self.model = ckpt.restore_model(device)
        self.device = device
        self.autocast = scoring_dtype(loop.precision, device, legacy_bf16=loop.bf16)
        self.num_classes = loop.model.num_classes
        self.registry = modalities_of(loop.resolved)
        self.task = task_of(loop.resolved.task)

    def score(self, part: Any, subsets: Sequence[str], batch_size: int) -> dict[str, Any]:
        """The accumulators' states over ``part`` (a ``DataIterator``): ``{subset: state, "per_class": state}``."""
        from mm_ray.train.metrics import score_subsets

        per_class = self.task.class_meter(self.num_classes)
        batches = part.iter_batches(batch_size=batch_size, batch_format="numpy")
        meters = score_subsets(
            self.model,
            batches,
            subsets,
            self.device,
            registry=self.registry,
            autocast_dtype=self.autocast,
            per_class=per_class,
            meter=lambda: self.task.meter(self.num_classes),
        )
        cpu = {name: {k: v.cpu() for k, v in meter.state().items()} for name, meter in meters.items()}
        return {**cpu, "per_class": {k: v.cpu() for k, v in per_class.state().items()}}


def score_on_workers(
    ckpt: Any,
    dataset: Any,
    *,
    workers: int,
    batch_size: int,
    num_cpus: float,
    num_gpus: float,
    subsets: Sequence[str] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Score ``ckpt`` (a ``LoadedCheckpoint``) on ``dataset`` with ``workers`` actors, under ``subsets`` (None:
    every subset of the run's modalities); returns the merged meters (``result()`` gives the numbers) and the
    per-class meter."""
    import ray

    from mm_ray.modalities.registry import modalities_of

    subsets = modalities_of(ckpt.loop.resolved).subsets() if subsets is None else subsets

    device = "cuda" if num_gpus else "cpu"
    shared = ray.put(ckpt)  # one copy of the weights in the object store for every actor
    actor = ray.remote(SubsetScorer).options(num_cpus=num_cpus, num_gpus=num_gpus)
    actors = [actor.remote(shared, device) for _ in range(workers)]
    parts = dataset.streaming_split(workers, equal=False)
    try:
        states = ray.get(
            [a.score.remote(p, list(subsets), batch_size) for a, p in zip(actors, parts, strict=True)]
        )
    finally:
        for a in actors:
            ray.kill(a)
    task, outputs = task_of(ckpt.loop.resolved.task), ckpt.loop.model.num_classes
    meters = {subset: task.meter(outputs) for subset in subsets}
    for subset, meter in meters.items():
        meter.load_state(merge_states([s[subset] for s in states]))
    per_class = task.class_meter(outputs)
    per_class.load_state(merge_states([s["per_class"] for s in states]))
    return meters, per_class

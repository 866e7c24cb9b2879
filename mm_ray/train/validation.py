"""Distributed validation inside the Ray Train workers: every worker scores its part of ``val``.

    metrics = validate(model, loop, device, autocast, registry.subsets(), registry)   # every rank, each epoch

``val`` is split row for row across the workers (``mm_ray.train.data_config.SplitConfig``); each rank scores
its part under every modality subset, the accumulators' sums are all-reduced (``mm_ray.train.mergeable``),
and every rank computes the same metrics from them: equal to one process scoring the whole set. Before,
rank 0 scored the whole set while the other workers waited.
"""

from __future__ import annotations

import time

import ray.train
import torch
import torch.distributed as dist

from mm_ray.modalities.registry import Registry
from mm_ray.tasks import task_of
from mm_ray.train.mergeable import all_reduce_metrics, lockstep
from mm_ray.train.metrics import score_subsets
from mm_ray.train.parallel import is_fsdp
from mm_ray.train.spec import LoopConfig
from mm_ray.train.wrapping import unwrap


def validate(
    model, loop: LoopConfig, device: torch.device, autocast, subsets, registry: Registry
) -> dict[str, float | int]:
    """Every rank scores its part of ``val`` (split row for row across the workers); the sums are added up
    over the ranks (``all_reduce_metrics``), so each metric equals one process scoring the whole set. A DDP
    model is scored through its inner module (no collective in its forward, any part size); an FSDP model
    gathers its parameters in every forward, so the ranks score in step (``lockstep``)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    # The iterator's prefetch thread as in training (none on CPU workers: it would compete with torch's thread
    # for the worker's core; measured with `mm-ray bench train --modes val1,val2`).
    val = ray.train.get_dataset_shard("val").iter_torch_batches(
        batch_size=max(loop.batch_size, 256), dtypes=None, prefetch_batches=loop.prefetch_batches
    )
    sharded = is_fsdp(model)
    task = task_of(loop.resolved.task)
    outputs = loop.model.num_classes
    per_class = task.class_meter(outputs)
    meters = score_subsets(
        model if sharded else unwrap(model),
        lockstep(val, device) if sharded else val,
        subsets,
        device,
        registry=registry,
        autocast_dtype=autocast,
        per_class=per_class,
        meter=lambda: task.meter(outputs),
    )
    all_reduce_metrics([*meters.values(), per_class], device=device)
    results = {subset: meter.result() for subset, meter in meters.items()}
    # The subset with every modality: its metrics are the headline val_* ones.
    full = results[registry.full_subset]
    metrics: dict[str, float | int] = {
        "val_loss": full["loss"],
        **{f"val_{name}": full[name] for name in task.metrics},
        "val_samples": full["samples"],
    }
    if task.kind == "classification":
        classes = per_class.result()
        # The mean of the per-class accuracies: the accuracy a class-balanced set would show.
        metrics["val_balanced_accuracy"] = (
            sum(c["accuracy"] for c in classes) / len(classes) if classes else float("nan")
        )
    metrics.update(
        {
            "val_seconds": max_over_ranks(time.perf_counter() - started, device),
            # The CPU the slowest rank's process spent on it (every thread): the work each rank did, which a
            # machine busy with other processes stretches in wall time but not in CPU time.
            "val_cpu_seconds": max_over_ranks(time.process_time() - cpu_started, device),
        }
    )
    for subset, r in results.items():
        for name in (*task.metrics, "loss", "samples"):
            metrics[f"subset/{subset}/{name}"] = r[name]
    return metrics


def max_over_ranks(value: float, device: torch.device) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.item()

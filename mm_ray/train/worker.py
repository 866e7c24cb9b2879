"""What every Ray Train worker runs: ``train_fn_per_worker``, the only code here that calls ``ray.train``.

    TorchTrainer(train_fn_per_worker, train_loop_config=worker_config(loop, tokenizer_json), ...)

Each worker builds the model from its ``LoopConfig`` (``mm_ray.train.spec``), resumes from the latest
checkpoint if the run has one, and for every remaining epoch trains on its shard of ``train``, evaluates
every modality subset on ``val`` (rank 0 only: ``val`` is not split, so rank 0 sees all of it), and reports
metrics with a checkpoint (``mm_ray.train.checkpoint``) written by rank 0.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from mm_ray.data.ledger import check_error_budget, ledger_get
from mm_ray.modalities.augment import augment_split, build_augmenter
from mm_ray.modalities.registry import modalities_of
from mm_ray.train.checkpoint import TOKENIZER_FILE, load_checkpoint, restore_into, save_checkpoint
from mm_ray.train.freezing import begin_epoch
from mm_ray.train.loop import loop_epoch, seed_everything
from mm_ray.train.metrics import evaluate_subsets
from mm_ray.train.schedule import optimizer_and_schedule
from mm_ray.train.spec import LoopConfig

PLACEMENT_GROUP_METRIC = "train_placement_group"
"""Metric carrying the hex id of the worker group's placement group (``mm_ray.tune.cleanup`` reads it)."""


def worker_config(
    loop: LoopConfig, tokenizer_json: str, *, ledger: Any = None, error_budget: float = 1.0
) -> dict[str, Any]:
    """``TorchTrainer``'s ``train_loop_config`` for ``train_fn_per_worker``.

    ``ledger``: the quarantine ledger actor of a training stream (``mm_ray.data.pipeline.Ingest``): rank 0
    copies its counts into every epoch's metrics and fails the run once ``error_budget`` is exceeded.
    """
    return {"loop": loop, "tokenizer_json": tokenizer_json, "ledger": ledger, "error_budget": error_budget}


def train_fn_per_worker(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Train worker loop. Returns the run's per-epoch metrics (earlier attempts' too, from the checkpoint)."""
    entered_at = time.time()
    loop: LoopConfig = config["loop"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    seed_everything(loop.seed + rank)
    if loop.torch_threads:
        torch.set_num_threads(loop.torch_threads)
    device = ray.train.torch.get_device()
    # A resumed run's weights come from its checkpoint: library encoders then skip reading their own.
    built = loop.model.build(load_pretrained=ray.train.get_checkpoint() is None)
    # An adversarial model's discriminator half leaves the generator and classifier unused: DDP must look for them.
    ddp = {"find_unused_parameters": True} if getattr(built, "adversarial", False) else None
    model = ray.train.torch.prepare_model(built, parallel_strategy_kwargs=ddp)
    optimizer, scheduler = optimizer_and_schedule(model, loop)
    start_epoch, history = _resume(model, optimizer, scheduler, device)
    autocast = torch.bfloat16 if loop.bf16 and device.type == "cuda" else None
    train_shard = ray.train.get_dataset_shard("train")
    # The settings the data was made with say how augmentation acts on it (a random gain in MFCCs).
    augmenter = build_augmenter(loop.augment, loop.resolved, seed=loop.seed, rank=rank)
    registry = modalities_of(loop.resolved)
    placement = _placement_group_id()
    nodes = _worker_nodes()
    for epoch in range(start_epoch, loop.epochs):
        # A library encoder's backbone unfrozen now: a DDP model is wrapped again (mm_ray.train.freezing).
        model = begin_epoch(
            model,
            epoch,
            wrap=lambda inner: ray.train.torch.prepare_model(inner, parallel_strategy_kwargs=ddp),
        )
        started_at, started = time.time(), time.perf_counter()
        batches = train_shard.iter_torch_batches(
            batch_size=loop.batch_size,
            dtypes=None,
            prefetch_batches=loop.prefetch_batches,
            local_shuffle_buffer_size=loop.shuffle_buffer or None,
            local_shuffle_seed=loop.shuffle_seed(epoch, rank) if loop.shuffle_buffer else None,
        )
        batches = augment_split(batches, augmenter, split="train", epoch=epoch)
        if hasattr(built, "subset_dropout"):  # a FusionModel; DDP wraps this very module
            built.subset_dropout = loop.subset_dropout_at(epoch)
        if loop.fail_at_epoch == epoch + 1 and start_epoch == 0:
            batches = _fault_drill(batches, loop.fail_at_epoch)
        batches, first_batch = _first_batch_clock(batches)
        stats = loop_epoch(model, batches, optimizer, scheduler, loop, device=device, autocast_dtype=autocast)
        stats["seconds"] = time.perf_counter() - started
        stats = _global_mean(stats, device)
        # resumed_from: the epochs this attempt restored from a checkpoint (a restart shows as a jump).
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": scheduler.last_epoch,
            "resumed_from": start_epoch,
            **{f"train_{k}": v for k, v in stats.items()},
        }
        metrics["train_samples_per_s"] = stats["samples"] / max(stats["seconds"], 1e-9)
        # For `mm-ray bench train`: when the epoch began (start-up = run start to this) and the intra-op
        # threads torch really uses (Ray derives OMP_NUM_THREADS from the worker's CPUs).
        metrics["train_started_at"] = started_at
        # Where a run's start-up goes (`mm-ray bench train` prints it): the worker's function entered, and the
        # first batch of this epoch reached the model.
        metrics["worker_entered_at"] = entered_at
        metrics["first_batch_at"] = first_batch.get("at", started_at)
        metrics["train_torch_threads"] = torch.get_num_threads()
        # Strings, not lists: Tune's TensorBoard logger skips strings silently and warns on lists.
        metrics["worker_nodes"] = ",".join(nodes)
        if placement:
            metrics[PLACEMENT_GROUP_METRIC] = placement
        if rank == 0 and loop.has_val:
            subsets = registry.subsets() if loop.subsets_at(epoch + 1) else (registry.full_subset,)
            metrics.update(_validate(model, loop.batch_size, device, autocast, subsets, registry))
        if config.get("ledger") is not None:
            metrics.update(quarantine_metrics(config["ledger"], config["error_budget"]))
        history.append(metrics)
        _report(metrics, history, model, optimizer, scheduler, config)
    return history


def quarantine_metrics(ledger: Any, error_budget: float) -> dict[str, Any]:
    """A training stream's quarantine counts so far (each bad sample once, however many epochs read it);
    raises ``ErrorBudgetExceeded`` once more than ``error_budget`` of the samples read were set aside."""
    summary = ledger_get(ledger.summary.remote())
    check_error_budget(summary, error_budget, log_hint="<run dir>/quarantine.jsonl after the run")
    metrics: dict[str, Any] = {
        "ingest_samples_read": summary["samples_read"],
        "ingest_samples_quarantined": summary["samples_quarantined"],
        "ingest_shards_unreadable": len(summary["shards_unreadable"]),
    }
    metrics.update({f"quarantine/{reason}": n for reason, n in summary["quarantine_reasons"].items()})
    return metrics


def _first_batch_clock(batches):
    """``batches`` unchanged, and a dict that gets the time (``"at"``) at which the first batch arrived."""
    seen: dict[str, float] = {}

    def timed():
        for batch in batches:
            seen.setdefault("at", time.time())
            yield batch

    return timed(), seen


def _placement_group_id() -> str | None:
    """The hex id of the placement group this worker runs in (None outside one)."""
    group = ray.util.get_current_placement_group()
    return group.id.hex() if group is not None else None


def _fault_drill(batches, fail_at_epoch: int):
    """``train.fail_at_epoch``: rank 0's process dies mid-epoch, as on a crashed node, once per run.

    ``batches`` unchanged, except that rank 0 exits after its first optimizer step of the epoch: that step
    (and every other worker's) is lost, and the restart must resume from the previous epoch's checkpoint.
    Only a run that started from scratch is wrapped: the restarted attempt resumes from a checkpoint, so it
    passes the same epoch and the run finishes.
    """
    if ray.train.get_context().get_world_rank() != 0:
        yield from batches
        return
    for taken, batch in enumerate(batches):
        if taken == 1:  # the first batch has been trained on
            # Ray Train's controller collects reports every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s): a
            # process that dies sooner after report() loses that checkpoint, as a real crash would. Wait
            # for the previous epoch's checkpoint to be registered so the drill always tests the restart.
            time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)))
            print(f"fault drill: rank 0 exits half-way through epoch {fail_at_epoch}", flush=True)
            os._exit(1)
        yield batch


def _resume(model, optimizer, scheduler, device: torch.device) -> tuple[int, list[dict[str, Any]]]:
    """Load the run's latest checkpoint, if any; returns (epochs already finished, their metrics)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as directory:
        state = load_checkpoint(directory, map_location=device)
    epochs = restore_into(state, model=model, optimizer=optimizer, scheduler=scheduler)
    return epochs, list(state.get("history", []))


def _worker_nodes() -> list[str]:
    """The Ray node ids the run's workers are on (every worker's, gathered): where a run really trained."""
    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_available() and dist.is_initialized()):
        return [node]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, node)
    return sorted(set(gathered))


def _global_mean(stats: dict[str, float | int], device: torch.device) -> dict[str, float | int]:
    """Sample-weighted loss/accuracy over every worker (each worker only saw its own shard)."""
    if not (dist.is_available() and dist.is_initialized()) or not stats["samples"]:
        return stats
    n = stats["samples"]
    # A generative model's loss terms (recon_image, d_loss, ...) are sample-weighted means like the loss.
    terms = sorted(set(stats) - {"loss", "accuracy", "samples", "steps", "seconds"})
    sums = torch.tensor(
        [stats["loss"] * n, stats["accuracy"] * n, n, stats["steps"], *(stats[t] * n for t in terms)],
        dtype=torch.float64,
        device=device,
    )
    dist.all_reduce(sums)
    # The epoch lasts as long as its slowest worker.
    seconds = torch.tensor([stats["seconds"]], dtype=torch.float64, device=device)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    total = sums[2].item()
    return {
        "loss": sums[0].item() / total,
        "accuracy": sums[1].item() / total,
        "samples": int(total),
        "steps": int(sums[3].item()),
        "seconds": seconds.item(),
        **{t: sums[4 + i].item() / total for i, t in enumerate(terms)},
    }


def _validate(
    model, batch_size: int, device: torch.device, autocast, subsets, registry
) -> dict[str, float | int]:
    val = ray.train.get_dataset_shard("val").iter_torch_batches(batch_size=max(batch_size, 256), dtypes=None)
    results = evaluate_subsets(model, val, subsets, device=device, registry=registry, autocast_dtype=autocast)
    # The subset with every modality: its accuracy is the headline val_accuracy.
    full = results[registry.full_subset]
    metrics: dict[str, float | int] = {
        "val_loss": full["loss"],
        "val_accuracy": full["accuracy"],
        "val_samples": full["samples"],
    }
    for subset, r in results.items():
        metrics[f"subset/{subset}/accuracy"] = r["accuracy"]
        metrics[f"subset/{subset}/loss"] = r["loss"]
        metrics[f"subset/{subset}/samples"] = r["samples"]
    return metrics


def _report(
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    model,
    optimizer,
    scheduler,
    config: dict[str, Any],
) -> None:
    """Every rank reports; only rank 0 attaches a checkpoint (the model is the same on all ranks).

    The checkpoint is self-contained for ``mm-ray evaluate``: the loop config (its resolved config included)
    is in its state and the tokenizer sits beside it as ``tokenizer.json``.
    """
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(
            tmp,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            epoch=metrics["epoch"],
            config=config["loop"].to_state(),
            metrics=metrics,
            history=history,
        )
        Path(tmp, TOKENIZER_FILE).write_text(config["tokenizer_json"])
        # report() copies the directory to run storage before returning, so the temp dir can go.
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

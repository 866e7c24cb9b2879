"""What every Ray Train worker runs: ``train_fn_per_worker``. With ``validation.py`` (distributed validation)
and ``reports.py`` (metrics and checkpoints), the only code here that calls ``ray.train`` from a worker.

    TorchTrainer(train_fn_per_worker, train_loop_config=worker_config(loop, tokenizer_json), ...)

Each worker builds the model from its ``LoopConfig`` (``mm_ray.train.spec``), wraps it (DDP or FSDP2,
``train.compile``), resumes from the latest checkpoint if the run has one (mid-epoch after a step
checkpoint: then it reads ``train_resume``, the rest of that epoch, ``mm_ray.train.datasets``), and for every
remaining epoch trains on its shard of ``train``, scores every modality subset on its part of ``val`` (the
sums added up over all workers: distributed validation), and reports metrics with a checkpoint
(``mm_ray.train.checkpoint``) whose full states every rank helps gather and rank 0 writes. Every
``train.checkpoint_every_steps`` optimizer steps it also reports a step checkpoint (``StepHook``).
"""

from __future__ import annotations

import time
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from mm_ray.data.ledger import check_error_budget, ledger_get
from mm_ray.modalities.augment import augment_split, build_augmenter
from mm_ray.modalities.registry import modalities_of
from mm_ray.train.autocast import autocast_dtype, grad_scaler
from mm_ray.train.checkpoint import load_checkpoint, restore_into
from mm_ray.train.datasets import RESUME_DATASET
from mm_ray.train.epoch_stream import RunEpochs
from mm_ray.train.freezing import begin_epoch
from mm_ray.train.loop import loop_epoch, seed_everything
from mm_ray.train.parallel import local_param_fraction, parallelize
from mm_ray.train.position import DataPosition, PositionTracker, set_rng_state
from mm_ray.train.reports import report_epoch, report_step
from mm_ray.train.schedule import optimizer_and_schedule
from mm_ray.train.spec import LoopConfig
from mm_ray.train.step_hook import StepHook, fault_drill
from mm_ray.train.validation import validate

PLACEMENT_GROUP_METRIC = "train_placement_group"
"""Metric carrying the hex id of the worker group's placement group (``mm_ray.tune.cleanup`` reads it)."""


def worker_config(
    loop: LoopConfig,
    tokenizer_json: str,
    *,
    ledger: Any = None,
    error_budget: float = 1.0,
    one_execution: bool = False,
) -> dict[str, Any]:
    """``TorchTrainer``'s ``train_loop_config`` for ``train_fn_per_worker``.

    ``ledger``: the quarantine ledger actor of a training stream (``mm_ray.data.pipeline.Ingest``): rank 0
    copies its counts into every epoch's metrics and fails the run once ``error_budget`` is exceeded.
    ``one_execution``: ``train`` is one stream for all the run's epochs (``train.one_execution``), cut into
    them here (``mm_ray.train.epoch_stream``).
    """
    return {
        "loop": loop,
        "tokenizer_json": tokenizer_json,
        "ledger": ledger,
        "error_budget": error_budget,
        "one_execution": one_execution,
    }


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
    checkpoint = ray.train.get_checkpoint()
    # A resumed run's weights come from its checkpoint: library encoders then skip reading their own.
    built = loop.model.build(load_pretrained=checkpoint is None)
    # An adversarial model's discriminator half leaves the generator and classifier unused: DDP must look for them.
    ddp = {"find_unused_parameters": True} if getattr(built, "adversarial", False) else None
    model = prepare(built, loop, ddp)
    optimizer, scheduler = optimizer_and_schedule(model, loop)
    scaler = grad_scaler(loop.precision, device)
    autocast = autocast_dtype(loop.precision, device, legacy_bf16=loop.bf16)
    start_epoch, history, position = _resume(checkpoint, model, optimizer, scheduler, scaler, device)
    attempt_step = int(scheduler.last_epoch)
    # The settings the data was made with say how augmentation acts on it (a random gain in MFCCs).
    augmenter = build_augmenter(loop.augment, loop.resolved, seed=loop.seed, rank=rank)
    registry = modalities_of(loop.resolved)
    placement = _placement_group_id()
    nodes = _worker_nodes()
    streams: dict[str, RunEpochs] = {}  # one execution for the run: its stream, read epoch after epoch
    for epoch in range(start_epoch, loop.epochs):
        # A library encoder's backbone unfrozen now: a DDP model is wrapped again (mm_ray.train.freezing).
        model = begin_epoch(model, epoch, wrap=lambda inner: prepare(inner, loop, ddp))
        # A step checkpoint inside this epoch: read the rest of it (mm_ray.train.datasets), not all of it.
        interrupted = position if position is not None and position.epoch == epoch else None
        name = RESUME_DATASET if interrupted is not None and interrupted.steps_in_epoch else "train"
        started_at, started = time.time(), time.perf_counter()
        if config.get("one_execution"):
            batches = _run_epoch_batches(streams, name, epoch, loop, rank)
        else:
            batches = ray.train.get_dataset_shard(name).iter_torch_batches(
                batch_size=loop.batch_size,
                dtypes=None,
                prefetch_batches=loop.prefetch_batches,
                local_shuffle_buffer_size=loop.shuffle_buffer or None,
                local_shuffle_seed=loop.shuffle_seed(epoch, rank) if loop.shuffle_buffer else None,
            )
        batches = augment_split(batches, augmenter, split="train", epoch=epoch)
        if hasattr(built, "subset_dropout"):  # a FusionModel; DDP wraps this very module
            built.subset_dropout = loop.subset_dropout_at(epoch)
        if loop.fail_at_epoch == epoch + 1 and start_epoch == 0 and attempt_step == 0:
            batches = _fault_drill(batches, loop.fail_at_epoch)
        batches, first_batch = _first_batch_clock(batches)
        hook = StepHook(
            loop,
            epoch=epoch,
            tracker=PositionTracker(epoch, interrupted),
            scheduler=scheduler,
            rank=rank,
            attempt_step=attempt_step,
            save=lambda pos, m=model: report_step(pos, m, optimizer, scheduler, scaler, config, history),
            good_samples=_good_samples(config) if rank == 0 else None,
            started=started,
        )
        stats = loop_epoch(
            model, batches, optimizer, scheduler, loop, device=device, autocast_dtype=autocast, scaler=scaler,
            on_step=hook,
        )  # fmt: skip
        stats["seconds"] = time.perf_counter() - started
        stats = _with_interrupted(_global_mean(stats, device), interrupted)
        position = None
        metrics = _epoch_metrics(epoch, stats, scheduler, start_epoch, attempt_step, model)
        if loop.checkpoint_every_steps:
            metrics.update(
                train_step_checkpoints=hook.checkpoints, train_step_checkpoint_s=hook.checkpoint_seconds
            )
        metrics.update(train_started_at=started_at, worker_entered_at=entered_at)
        metrics["first_batch_at"] = first_batch.get("at", started_at)
        # Strings, not lists: Tune's TensorBoard logger skips strings silently and warns on lists.
        metrics["worker_nodes"] = ",".join(nodes)
        if placement:
            metrics[PLACEMENT_GROUP_METRIC] = placement
        if loop.has_val:
            subsets = registry.subsets() if loop.subsets_at(epoch + 1) else (registry.full_subset,)
            metrics.update(validate(model, loop, device, autocast, subsets, registry))
        if config.get("ledger") is not None:
            metrics.update(quarantine_metrics(config["ledger"], config["error_budget"]))
        history.append(metrics)
        end = DataPosition(epoch=epoch + 1, global_step=int(scheduler.last_epoch), steps_in_epoch=0)
        report_epoch(metrics, history, model, optimizer, scheduler, scaler, config, end)
    return history


def _run_epoch_batches(
    streams: dict[str, RunEpochs], name: str, epoch: int, loop: LoopConfig, rank: int
) -> Any:
    """Epoch ``epoch``'s numpy batches of a run read in one execution: dataset ``name``'s stream (opened on its
    first use, then read on: ``train`` holds every epoch left; ``train_resume`` the interrupted one), cut at the
    epoch's end, shuffled through the local buffer within the epoch."""
    if name not in streams:
        blocks = ray.train.get_dataset_shard(name).iter_batches(
            batch_size=None, batch_format="numpy", prefetch_batches=loop.prefetch_batches
        )
        streams[name] = RunEpochs(blocks, batch_size=loop.batch_size, shuffle_buffer=loop.shuffle_buffer)
    seed = loop.shuffle_seed(epoch, rank) if loop.shuffle_buffer else None
    return streams[name].epoch(epoch, seed=seed)


def _epoch_metrics(
    epoch: int, stats, scheduler, start_epoch: int, attempt_step: int, model
) -> dict[str, Any]:
    """An epoch's training metrics (the global ``stats``) and where the attempt that ran it started."""
    # resumed_from(_step): the epochs (optimizer steps) this attempt restored from a checkpoint: a restart
    # shows as a jump.
    metrics: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": scheduler.last_epoch,
        "resumed_from": start_epoch,
        "resumed_from_step": attempt_step,
        **{f"train_{k}": v for k, v in stats.items()},
    }
    metrics["train_samples_per_s"] = stats["samples"] / max(stats["seconds"], 1e-9)
    # For `mm-ray bench train`: when the epoch began (start-up = run start to this), when the worker's function
    # was entered and the first batch reached the model (where start-up goes), and the intra-op threads torch
    # really uses (Ray derives OMP_NUM_THREADS from the worker's CPUs).
    metrics["train_torch_threads"] = torch.get_num_threads()
    # Under FSDP each worker holds about 1/workers of the parameters (1.0 replicated).
    metrics["train_params_local_fraction"] = local_param_fraction(model)
    return metrics


def prepare(model: torch.nn.Module, loop: LoopConfig, ddp_kwargs: dict[str, Any] | None) -> torch.nn.Module:
    """``model`` on the worker's device, data parallel by ``train.strategy``, compiled by ``train.compile``
    (``mm_ray.train.parallel.parallelize``). DDP goes through Ray Train's ``prepare_model`` (it moves the
    model and sets the CUDA device); FSDP2 is ours (``mm_ray.train.parallel`` says why)."""

    def place(inner: torch.nn.Module, ddp: bool) -> torch.nn.Module:
        strategy = "ddp" if ddp else None
        return ray.train.torch.prepare_model(
            inner, parallel_strategy=strategy, parallel_strategy_kwargs=ddp_kwargs
        )

    world = ray.train.get_context().get_world_size()
    return parallelize(model, strategy=loop.strategy, compile=loop.compile, world_size=world, place=place)


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
    rank = ray.train.get_context().get_world_rank()
    for taken, batch in enumerate(batches):
        if taken == 1:  # the first batch has been trained on
            fault_drill(rank, f"half-way through epoch {fail_at_epoch}")
        yield batch


def _resume(
    checkpoint: Any, model, optimizer, scheduler, scaler, device: torch.device
) -> tuple[int, list[dict[str, Any]], DataPosition | None]:
    """Load the run's latest checkpoint, if any; returns (epochs already finished, their metrics, the data
    position of a step checkpoint). A step checkpoint also brings back this rank's RNG states (when the
    worker count is the one it was saved with) and the fp16 loss scale."""
    if checkpoint is None:
        return 0, [], None
    with checkpoint.as_directory() as directory:
        state = load_checkpoint(directory, map_location=device)
    epochs = restore_into(state, model=model, optimizer=optimizer, scheduler=scheduler)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rngs = state.get("rng") or []
    ctx = ray.train.get_context()
    if len(rngs) == ctx.get_world_size():
        set_rng_state(rngs[ctx.get_world_rank()])
    position = DataPosition.from_state(state["position"]) if state.get("position") else None
    return epochs, list(state.get("history", [])), position


def _with_interrupted(stats: dict[str, Any], interrupted: DataPosition | None) -> dict[str, Any]:
    """The epoch's global stats, over the samples trained before its step checkpoint too."""
    if interrupted is None or not interrupted.sums.get("samples"):
        return stats
    before = interrupted.sums
    n = stats["samples"]
    total = n + before["samples"]
    loss = stats["loss"] * n if n else 0.0
    accuracy = stats["accuracy"] * n if n else 0.0
    return {
        **stats,
        "loss": (loss + before["loss_sum"]) / total,
        "accuracy": (accuracy + before["correct"]) / total,
        "samples": int(total),
        "steps": stats["steps"] + interrupted.steps_in_epoch,
        "seconds": stats["seconds"] + before.get("seconds", 0.0),
    }


def _good_samples(config: dict[str, Any]):
    """Rank 0's view of the ledger's good samples per finished shard (streaming), for the data position."""
    ledger = config.get("ledger")
    if ledger is None:
        return None
    return lambda: ledger_get(ledger.good_samples.remote())


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

"""Batch inference: a checkpoint's predictions for every sample of a shard set, as Parquet.

    result = predict("runs/demo", ["s3://bucket/new-{000..099}.tar"], out="s3://bucket/predictions")
    result["samples"], result["files_written"], result["shards_skipped"]

The path of a sample: its shard is read and decoded by the checkpoint's own preprocessing pools (the settings and
tokenizer it was trained with: ``mm_ray.data.pipeline.Ingest``, as ``mm-ray evaluate`` and training use), then
scored by a pool of ``predict.replicas`` model replicas (``CheckpointPredictor`` actors, a GPU each where the
cluster has GPUs), and its row comes back to this process, which writes one Parquet file per shard
(``ShardOutputs``): ``__key__``, the prediction columns (``mm_ray.inference.outputs``: ``predicted``,
``probabilities``) and, with ``predict.embedding``, the fused ``embedding``. Shards need no labels
(``data.label_required`` is off here). Bad samples are quarantined as in ingest (``quarantine_log``).

Streaming and bounded: Ray Data keeps ``data.memory_limit_mb`` in flight, and this process holds prediction rows
only for the shards not yet complete. Resumable: a shard whose file is in ``out`` is not read again, so a run
stopped half way goes on where it was when started again with the same arguments.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mm_ray.config.schema import PredictConfig
from mm_ray.data.ledger import ledger_get
from mm_ray.data.pipeline import Ingest
from mm_ray.data.sources import expand_shards
from mm_ray.inference.predictor import CheckpointPredictor
from mm_ray.inference.shard_outputs import ShardOutputs
from mm_ray.progress import ProgressFactory, watch
from mm_ray.runtime import init_ray
from mm_ray.train.checkpoint import open_for_shards


def replica_resources(predict: PredictConfig, cluster_gpus: float) -> dict[str, float]:
    """num_cpus / num_gpus of one replica: a GPU each when the cluster has one, unless configured."""
    gpus = predict.num_gpus if predict.num_gpus is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    return {"num_cpus": predict.num_cpus, "num_gpus": gpus}


def predict(
    checkpoint: str | Path,
    specs: str | Sequence[str],
    *,
    out: str,
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    quarantine_log: str | Path | None = None,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Predict every sample of the shards ``specs`` (default: the config's ``data.val_shards``) into ``out`` (a
    directory or ``s3://`` prefix). ``overrides`` / ``config_file`` are laid over the checkpoint's saved config
    (``predict.*``, ``pools.*``, ``ray.*``, ``data.storage_options`` for S3). Raises ``CheckpointError``,
    ``ConfigError``, ``ShardSpecError``, or ``ErrorBudgetExceeded`` when too many samples are quarantined."""
    import ray

    started = time.perf_counter()
    ckpt, cfg, specs = open_for_shards(
        checkpoint, specs, ["data.label_required=false", *overrides], config_file, purpose="predict"
    )
    storage = dict(cfg.data.storage_options)
    outputs = ShardOutputs(out, storage)
    urls = expand_shards(specs, storage_options=storage)
    todo = [url for url in urls if not outputs.done(url)]
    result = {
        "checkpoint": str(ckpt.directory),
        "preset": ckpt.loop.model.name,
        "out": out,
        "shards": len(urls),
    }
    result["shards_skipped"] = len(urls) - len(todo)
    if not todo:
        return {**result, "samples": 0, "files_written": 0, "quarantined": 0, "seconds": 0.0}
    init_ray(cfg.ray)
    resources = replica_resources(cfg.predict, ray.cluster_resources().get("GPU", 0.0))
    replicas = cfg.predict.replicas
    ingest = Ingest.from_config(
        cfg, todo, ckpt.tokenizer_json, reserved_cpus=resources["num_cpus"] * replicas
    )
    predicted = ingest.dataset.map_batches(
        CheckpointPredictor,
        fn_constructor_kwargs={
            "checkpoint": ckpt,
            "device": "cuda" if resources["num_gpus"] else "cpu",
            "embedding": cfg.predict.embedding,
            "threads": max(1, round(resources["num_cpus"])),
        },
        compute=ray.data.ActorPoolStrategy(size=replicas),
        batch_size=cfg.predict.batch_size,
        batch_format="numpy",
        **resources,
    )
    with watch(progress, "predict", lambda: ingest.summary()["samples_read"]):
        for batch in predicted.iter_batches(batch_size=None, batch_format="numpy"):
            outputs.add(batch)
            if outputs.pending():
                outputs.flush_complete(ledger_get(ingest.ledger.good_samples.remote()))
    summary = ingest.finish(quarantine_log=quarantine_log)
    outputs.close(ledger_get(ingest.ledger.good_samples.remote()))
    return {
        **result,
        "samples": outputs.rows_written,
        "files_written": outputs.files_written,
        "quarantined": summary["samples_quarantined"],
        "quarantine_reasons": summary["quarantine_reasons"],
        "shards_unreadable": summary["shards_unreadable"],
        "pools": summary["pools"],
        "replicas": f"{replicas} x {resources['num_cpus']} CPU"
        + (f" + {resources['num_gpus']} GPU" if resources["num_gpus"] else ""),
        "seconds": round(time.perf_counter() - started, 2),
    }

"""Per-modality embeddings of a shard set from a checkpoint, written with Ray Data, and their retrieval scores.

    result = embed("runs/demo/train/late_concat", ["runs/demo/shards/val-*.tar"])
    result["out"]        # the output directory: data/ (Parquet, one row per sample) and retrieval.json
    result["retrieval"]  # mm_ray.retrieval.metrics.retrieval_scores records (image->text, audio->text)

The shards go through the checkpoint's own ingest (the per-modality preprocessing actor pools with the
settings and tokenizer it was trained with, as ``mm-ray evaluate`` does), then through a pool of
``CheckpointEmbedder`` actors that run the model's ``embed``: the aligned projections of a model trained with
``train.align_loss_weight`` > 0, else its encoders' outputs (which live in unrelated spaces: retrieval with
them scores chance, the baseline an aligned model must beat). The actors take a GPU each when the cluster has
GPUs (``embed.num_gpus``). Rows are written as Parquet to ``<out>/data`` by Ray Data's ``write_parquet``: ``__key__``,
``label``, and per modality of the model ``<m>_embedding`` (float32 ``[D]``, L2-normalised) and ``has_<m>``.
The directory is the caller's ``out_dir``, by default ``<run dir>/embeddings``; what an earlier run wrote there
is replaced.

Retrieval reads the Parquet back, orders the rows by key (so the galleries do not depend on block order) and
scores each ``embed.pairs`` direction; the scores are written beside the rows as ``retrieval.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data

from mm_ray.columns import KEY, LABEL
from mm_ray.config.schema import EmbedConfig
from mm_ray.data.pipeline import Ingest
from mm_ray.data.sources import ShardSpecError
from mm_ray.modalities.registry import modalities_of
from mm_ray.modalities.spec import presence_column
from mm_ray.progress import ProgressFactory, watch
from mm_ray.retrieval.metrics import parse_pairs, retrieval_scores
from mm_ray.runtime import init_ray
from mm_ray.train.checkpoint import LoadedCheckpoint, open_for_shards

RETRIEVAL_FILE = "retrieval.json"
DATA_DIR = "data"


def embedding_column(modality: str) -> str:
    """The Parquet column of a modality's embedding."""
    return f"{modality}_embedding"


class CheckpointEmbedder:
    """A Ray Data actor: numpy batches of model-ready columns -> keys, labels, embeddings and presence.

    ``checkpoint`` is a ``LoadedCheckpoint`` (its model spec and weights); it is sent with the actor, so the
    checkpoint need not be readable from the actor's node.
    """

    def __init__(self, checkpoint: LoadedCheckpoint):
        import torch

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = checkpoint.restore_model(self.device)
        if not callable(getattr(self.model, "embed", None)):
            raise TypeError(
                f"the model built by {checkpoint.loop.model.name!r} has no embed(batch) method (see FusionModel.embed)"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from mm_ray.train.loop import to_device

        with torch.inference_mode():
            embeddings, present = self.model.embed(to_device(batch, self.device))
        out = {KEY: batch[KEY], LABEL: batch[LABEL]}
        for modality, embedding in embeddings.items():
            out[embedding_column(modality)] = embedding.float().cpu().numpy()
            out[presence_column(modality)] = present[modality].cpu().numpy()
        return out


def embedder_resources(embed: EmbedConfig, cluster_gpus: float) -> dict[str, float]:
    """num_cpus / num_gpus of one embedding actor: a GPU each when the cluster has one, unless configured."""
    gpus = embed.num_gpus if embed.num_gpus is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    return {"num_cpus": embed.num_cpus, "num_gpus": gpus}


def embed(
    checkpoint: str | Path,
    specs: str | Sequence[str] = (),
    *,
    out_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    embed_config: EmbedConfig | None = None,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Embed the shards ``specs`` (default: the config's ``data.val_shards``) and score retrieval on them.

    ``checkpoint``: a checkpoint or run directory (its latest checkpoint). ``overrides`` / ``config_file`` are
    laid over the checkpoint's saved config (``embed.*``, pools, ``ray.*``); ``embed_config``, if given, replaces its
    ``embed`` section (a checkpoint saved before that section existed has only the defaults). ``progress`` draws progress
    (``mm_ray.progress``). Raises what
    ``mm-ray evaluate`` raises for bad paths, keys and shards.
    """
    started = time.perf_counter()
    ckpt, cfg, specs = open_for_shards(checkpoint, specs, overrides, config_file, purpose="embed")
    if embed_config is not None:
        cfg = dataclasses.replace(cfg, embed=embed_config)
    pairs = parse_pairs(cfg.embed.pairs)
    run_dir = ckpt.picked_from or ckpt.directory.parent
    out = Path(out_dir) if out_dir is not None else run_dir / "embeddings"
    _clear(out)
    init_ray(cfg.ray)
    resources = embedder_resources(cfg.embed, ray.cluster_resources().get("GPU", 0.0))
    reserved = resources["num_cpus"] * cfg.embed.actors
    ingest = Ingest.from_config(cfg, specs, ckpt.tokenizer_json, reserved_cpus=reserved)
    embedded = ingest.dataset.map_batches(
        CheckpointEmbedder,
        fn_constructor_kwargs={"checkpoint": ckpt},
        compute=ray.data.ActorPoolStrategy(size=cfg.embed.actors),
        batch_size=cfg.embed.batch_size,
        batch_format="numpy",
        **resources,
    )
    with watch(progress, "embed", lambda: ingest.summary()["samples_read"]):
        embedded.write_parquet(str(out / DATA_DIR))
    summary = ingest.finish()
    rows = read_embeddings(out / DATA_DIR)
    modalities = [m for m in modalities_of(cfg).names if embedding_column(m) in rows]
    scores = retrieval_scores(
        {m: rows[embedding_column(m)] for m in modalities},
        {m: rows[presence_column(m)] for m in modalities},
        rows[LABEL],
        pairs=pairs,
        ks=cfg.embed.ks,
        gallery_size=cfg.embed.gallery_size,
    )
    result = {
        "checkpoint": str(ckpt.directory),
        "preset": ckpt.loop.model.name,
        "classes": ckpt.classes,
        "aligned": ckpt.loop.align_loss_weight > 0,
        "out": str(out),
        "samples": len(rows[KEY]),
        "modalities": modalities,
        "quarantined": summary["samples_quarantined"],
        "actor_resources": resources,
        "seconds": round(time.perf_counter() - started, 2),
        "retrieval": scores,
    }
    (out / RETRIEVAL_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def read_embeddings(directory: str | Path) -> dict[str, np.ndarray]:
    """The rows ``embed`` wrote, as numpy columns ordered by ``__key__`` (embeddings ``[N, D]``)."""
    batches = list(ray.data.read_parquet(str(directory)).iter_batches(batch_size=None, batch_format="numpy"))
    if not batches:
        raise ShardSpecError(f"{directory}: no embeddings were written (every sample quarantined?)")
    columns = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    order = np.argsort(columns[KEY], kind="stable")
    return {name: np.asarray(values)[order] for name, values in columns.items()}


def _clear(out: Path) -> None:
    """Remove what an earlier run wrote to ``out`` (Ray Data adds files beside existing ones), never following a
    link: a ``data`` or ``retrieval.json`` that is a link (a run directory may come from anywhere) is removed
    itself, its target left alone, and ``rmtree`` does not follow links inside ``data``."""
    data = out / DATA_DIR
    if data.is_symlink() or data.is_file():
        data.unlink()
    elif data.exists():
        shutil.rmtree(data)
    (out / RETRIEVAL_FILE).unlink(missing_ok=True)  # a link is removed, not its target
    out.mkdir(parents=True, exist_ok=True)

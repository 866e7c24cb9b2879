"""mm_ray: multimodal (image + text + audio) fusion training on Ray.

The Python API (the ``mm-ray`` command is a thin shell over it)::

    import mm_ray

    cfg = mm_ray.load_config("pipelines/demo.yaml", ["train.epochs=3"])   # typed, checked Config
    cache = mm_ray.build_cache(cfg, ["shards/train-*.tar"], "runs/cache")   # -> Cache
    stream = mm_ray.ingest(cfg, ["shards/val-*.tar"])      # the model-ready stream (stream.dataset)
    result = mm_ray.fit(cfg)                               # -> TrainResult (Ray Train DDP)
    scores = mm_ray.evaluate(result.run_dir, ["shards/val-*.tar"])
    vectors = mm_ray.embed(result.run_dir, ["shards/val-*.tar"])
    preds = mm_ray.predict(result.run_dir, ["shards/new-*.tar"], out="preds")   # Parquet, one file a shard
    mm_ray.export(result.run_dir, "exports/demo")          # safetensors + JSON spec + tokenizer
    exported = mm_ray.load_exported("exports/demo")        # the model, without Ray or the checkpoint
    made = mm_ray.generate(mvae_run_dir, ["shards/val-*.tar"], sources=("text",), target="image")
    swept = mm_ray.sweep(cfg, "pipelines/spaces/fusion_small.yaml")        # -> SweepResult (Ray Tune)
    job_id = mm_ray.submit(["demo"], address="http://HEAD:8265")         # a Ray job on a cluster

Each call starts or joins Ray as ``cfg.ray`` says, returns plain results and prints nothing; progress goes to
the ``mm_ray`` logger (``logging.basicConfig(level=logging.INFO)`` shows it). Errors name the key, shard or
path at fault: ``ConfigError``, ``ShardSpecError``, ``CacheError``, ``CheckpointError``,
``ErrorBudgetExceeded``, ``SubmitError``.

The package is layered so data flows one way::

    shards -> mm_ray.data (reader, quarantine) -> mm_ray.preprocess (per-modality
    preprocessors) -> Ray Data actor pools (mm_ray.data.pipeline) -> cache / trainer

Everything under ``mm_ray.preprocess``, ``mm_ray.models``, ``mm_ray.demo`` (but ``run``) and the pure parts
of ``mm_ray.data`` and ``mm_ray.train`` is plain Python and can be used without Ray. Names are imported on
first use, so ``import mm_ray`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what IDEs and type checkers resolve; at run time ``__getattr__`` imports on first use
    from mm_ray.cluster.submit import SubmitError as SubmitError
    from mm_ray.cluster.submit import submit as submit
    from mm_ray.config.load import ConfigError as ConfigError
    from mm_ray.config.schema import Config as Config
    from mm_ray.data.build import build_cache as build_cache
    from mm_ray.data.cache import Cache as Cache
    from mm_ray.data.cache import CacheError as CacheError
    from mm_ray.data.ledger import ErrorBudgetExceeded as ErrorBudgetExceeded
    from mm_ray.data.pipeline import Ingest as Ingest
    from mm_ray.data.pipeline import ingest as ingest
    from mm_ray.data.sources import ShardSpecError as ShardSpecError
    from mm_ray.demo.dataset import make_shards as make_shards
    from mm_ray.demo.run import DEMO_DEFAULTS as DEMO_DEFAULTS
    from mm_ray.demo.run import run_demo as run_demo
    from mm_ray.generation.run import generate as generate
    from mm_ray.inference.export import export as export
    from mm_ray.inference.export import load_exported as load_exported
    from mm_ray.inference.predict import predict as predict
    from mm_ray.retrieval.embed import embed as embed
    from mm_ray.runtime import init_ray as init_ray
    from mm_ray.settings import load_config as load_config
    from mm_ray.train.checkpoint import CheckpointError as CheckpointError
    from mm_ray.train.checkpoint import open_checkpoint as open_checkpoint
    from mm_ray.train.evaluate import evaluate as evaluate
    from mm_ray.train.ray_trainer import TrainResult as TrainResult
    from mm_ray.train.ray_trainer import fit as fit
    from mm_ray.tune.sweep import SweepResult as SweepResult
    from mm_ray.tune.sweep import resume_sweep as resume_sweep
    from mm_ray.tune.sweep import sweep as sweep


_API = {
    "load_config": "mm_ray.settings",
    "ConfigError": "mm_ray.config.load",
    "Config": "mm_ray.config.schema",
    "init_ray": "mm_ray.runtime",
    "ingest": "mm_ray.data.pipeline",
    "Ingest": "mm_ray.data.pipeline",
    "build_cache": "mm_ray.data.build",
    "Cache": "mm_ray.data.cache",
    "CacheError": "mm_ray.data.cache",
    "ShardSpecError": "mm_ray.data.sources",
    "ErrorBudgetExceeded": "mm_ray.data.ledger",
    "fit": "mm_ray.train.ray_trainer",
    "TrainResult": "mm_ray.train.ray_trainer",
    "evaluate": "mm_ray.train.evaluate",
    "open_checkpoint": "mm_ray.train.checkpoint",
    "CheckpointError": "mm_ray.train.checkpoint",
    "embed": "mm_ray.retrieval.embed",
    "predict": "mm_ray.inference.predict",
    "export": "mm_ray.inference.export",
    "load_exported": "mm_ray.inference.export",
    "generate": "mm_ray.generation.run",
    "sweep": "mm_ray.tune.sweep",
    "resume_sweep": "mm_ray.tune.sweep",
    "SweepResult": "mm_ray.tune.sweep",
    "submit": "mm_ray.cluster.submit",
    "SubmitError": "mm_ray.cluster.submit",
    "make_shards": "mm_ray.demo.dataset",
    "run_demo": "mm_ray.demo.run",
    "DEMO_DEFAULTS": "mm_ray.demo.run",
}
"""Public name -> the module that owns it."""

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mm_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])

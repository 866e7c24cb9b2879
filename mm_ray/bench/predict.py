"""``mm-ray bench predict``: batch inference with ``mm_ray.predict`` against a plain loop, same model, same data.

    mm-ray bench predict --repeat 2                  # 8,000 demo samples (the bench shards twice), paired rounds
    mm-ray bench predict --scale 10                  # and mm_ray predict's peak memory at 1x and 10x the shards

Modes, each in a fresh interpreter watched by ``TreeMonitor`` (every process of the run, PSS and CPU):

- ``dataloader``: ``webdataset`` + ``torch.utils.data.DataLoader`` with one worker per core decoding with the
  pipeline's own preprocessors (``mm_ray.bench.baselines.dataloader_batches``), the model in the main process
  (``CheckpointPredictor``: the class mm_ray's replicas run), batches of ``predict.batch_size``, the predictions
  written to one Parquet file.
- ``mm_ray``: ``mm_ray.predict`` on a fresh local Ray of ``cores`` CPUs: the checkpoint's pools, a replica pool,
  one Parquet file per shard.

Both score the same checkpoint (an untrained model of the config's preset: the time goes to decoding, which is
what the two designs differ in) and write the same columns. Targets: mm_ray / dataloader >= 0.9 end to end; the
peak PSS over ``scale`` x the shards within 1.3x of the 1x run's (hard links of the same shards under other names).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mm_ray.bench.measure import run_spec
from mm_ray.bench.records import PredictBench, PredictRun

MODES = ("dataloader", "mm_ray")
DEFAULTS = ("name=bench", "demo.num_samples=4000", "demo.samples_per_shard=500", "demo.val_fraction=0.0",
            "image.size=48", "audio.n_mels=32")  # fmt: skip
"""Without ``--config``: the bench shards (4,000 demo samples in 8 shards), decoded as ``bench train`` does. At the
default 224 px the demo model's image encoder costs ~5x the decoding per sample on a CPU (measured: 27 vs 5.6 ms),
and the benchmark would time the model's forward pass, the same code in both modes."""
TARGET = 0.9
MEMORY_TARGET = 1.3
REPLICAS = ("predict.replicas=1",)


def write_checkpoint(cfg: Any, urls: list[str], directory: Path) -> Path:
    """An untrained checkpoint of ``cfg``'s model (its preset, the shards' tokenizer, the demo's 4 classes), as
    training writes one."""
    import torch
    from tokenizers import Tokenizer

    from mm_ray.data.captions import obtain_tokenizer
    from mm_ray.data.manifest import model_ready_shapes
    from mm_ray.train.checkpoint import TOKENIZER_FILE, save_checkpoint
    from mm_ray.train.spec import LoopConfig

    tokenizer_json = obtain_tokenizer(cfg, urls)
    vocab = Tokenizer.from_str(tokenizer_json).get_vocab_size()
    loop = LoopConfig.for_run(cfg, shapes=model_ready_shapes(cfg), vocab_size=vocab, num_classes=4,
                              rows=1000, has_val=False)  # fmt: skip
    model = loop.model.build(load_pretrained=False)
    save_checkpoint(directory, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    scheduler=None, epoch=0, config=loop.to_state())  # fmt: skip
    (directory / TOKENIZER_FILE).write_text(tokenizer_json)
    return directory


def run_mode(
    mode: str, checkpoint: str, urls: list[str], cores: int, out: str, overrides: list[str]
) -> PredictRun:
    """One run in this process (the child's work)."""
    import torch  # noqa: F401  (imported before the clock, in both modes)

    from mm_ray.bench.measure import TreeMonitor

    with TreeMonitor(os.getpid(), interval=0.5) as mon:
        t0 = time.time()
        samples = (
            _plain_loop(checkpoint, urls, cores, out, overrides)
            if mode == "dataloader"
            else _mm_ray(checkpoint, urls, cores, out, overrides)
        )
        seconds = time.time() - t0  # the predictions are all written: Ray's shutdown is not counted
    if mode == "mm_ray":
        import ray

        ray.shutdown()
    return PredictRun(
        mode=mode,
        samples=samples,
        seconds=round(seconds, 1),
        samples_per_s=round(samples / max(seconds, 1e-9), 1),
        peak_pss_mb=round(mon.peak_pss_mb, 1),
        peak_rss_mb=round(mon.peak_rss_mb, 1),
        cpu_s_by_group={k: round(v, 1) for k, v in mon.cpu_by_group().items()},
    )


def _mm_ray(checkpoint: str, urls: list[str], cores: int, out: str, overrides: list[str]) -> int:
    from mm_ray.config.schema import RayConfig
    from mm_ray.inference.predict import predict
    from mm_ray.runtime import init_ray

    init_ray(RayConfig(num_cpus=cores))
    return predict(checkpoint, urls, out=out, overrides=overrides)["samples"]


def _plain_loop(checkpoint: str, urls: list[str], cores: int, out: str, overrides: list[str]) -> int:
    import pyarrow.parquet as pq

    from mm_ray.bench.baselines import dataloader_batches
    from mm_ray.columns import SHARD
    from mm_ray.data.members import member_map
    from mm_ray.data.pipeline import decoders_of
    from mm_ray.inference.predictor import CheckpointPredictor
    from mm_ray.inference.shard_outputs import to_arrow
    from mm_ray.train.checkpoint import open_for_shards

    ckpt, cfg, _ = open_for_shards(
        checkpoint, urls, ["data.label_required=false", *overrides], purpose="predict"
    )
    predictor = CheckpointPredictor(ckpt, "cpu")
    batches = dataloader_batches(urls, decoders_of(cfg, ckpt.tokenizer_json), member_map(cfg), cfg.predict.batch_size,
                                 workers=cores)  # fmt: skip
    samples, writer = 0, None
    Path(out).mkdir(parents=True, exist_ok=True)
    for batch in batches:
        table = to_arrow({k: v for k, v in predictor(batch).items() if k != SHARD})
        writer = writer or pq.ParquetWriter(f"{out}/predictions.parquet", table.schema)
        writer.write_table(table)
        samples += table.num_rows
    if writer is not None:
        writer.close()
    return samples


def run_in_subprocess(
    mode: str, checkpoint: str, urls: list[str], cores: int, overrides: list[str]
) -> PredictRun:
    with tempfile.TemporaryDirectory() as out:
        spec = {"mode": mode, "checkpoint": checkpoint, "urls": urls, "cores": cores, "dir": out,
                "overrides": overrides}  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        return PredictRun.from_dict(run_spec("mm_ray.bench.predict", spec, env, what=f"bench predict {mode}"))


def bench_predict(
    *, cfg: Any, urls: list[str], cores: int, repeat: int, scale: int, copies: int, overrides: Sequence[str]
) -> PredictBench:
    """Paired rounds over ``copies`` x ``urls`` (hard links), then mm_ray alone over ``urls`` and ``scale`` x."""
    from mm_ray.bench.stream_memory import repeated_shards

    overrides = [*REPLICAS, *overrides]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(write_checkpoint(cfg, urls, Path(tmp) / "ckpt"))
        data = repeated_shards(urls, copies, Path(tmp) / "data")
        rounds = []
        for r in range(repeat):
            order = MODES if r % 2 == 0 else tuple(reversed(MODES))
            rounds.append(
                {mode: run_in_subprocess(mode, checkpoint, data, cores, overrides) for mode in order}
            )
        ratios = tuple(round(x["mm_ray"].samples_per_s / x["dataloader"].samples_per_s, 3) for x in rounds)
        memory: dict[str, PredictRun] = {}
        if scale > 1:
            memory["1x"] = run_in_subprocess("mm_ray", checkpoint, urls, cores, overrides)
            scaled = repeated_shards(urls, scale, Path(tmp) / "scaled")
            memory[f"{scale}x"] = run_in_subprocess("mm_ray", checkpoint, scaled, cores, overrides)
    memory_ratio = round(memory[f"{scale}x"].peak_pss_mb / memory["1x"].peak_pss_mb, 3) if memory else None
    return PredictBench(
        cores=cores,
        samples=rounds[0]["mm_ray"].samples,
        rounds=tuple(rounds),
        ratios_by_round=ratios,
        ratio=round(statistics.median(ratios), 3),
        target=TARGET,
        memory=memory,
        memory_ratio=memory_ratio,
        memory_target=MEMORY_TARGET,
    )


def predict_table(summary: PredictBench) -> str:
    from mm_ray.tables import format_table

    rows = []
    for i, runs in enumerate(summary.rounds, 1):
        for mode, run in runs.items():
            rows.append([f"round {i}", mode, run.samples, run.seconds, run.samples_per_s, run.peak_pss_mb])
    for scale, run in summary.memory.items():
        rows.append(
            [f"memory {scale}", run.mode, run.samples, run.seconds, run.samples_per_s, run.peak_pss_mb]
        )
    return format_table(["run", "mode", "samples", "seconds", "samples/s", "peak PSS MB"], rows)


def _worker_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = run_mode(spec["mode"], spec["checkpoint"], spec["urls"], spec["cores"], spec["dir"] + "/out",
                      spec["overrides"])  # fmt: skip
    Path(spec["out"]).write_text(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    _worker_main(sys.argv[1])

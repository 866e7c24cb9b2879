"""Cross-modal generation from a checkpoint over a shard set, with a Ray Data actor pool (like ``embed``).

    result = generate("runs/gen/train/mvae", ["shards/val-*.tar"], sources=("text",), target="image", samples=4)
    result["out"]       # <run dir>/generated unless out_dir is given (a local path or a URI: s3://bucket/gen)
    result["files"]     # files written

The shards go through the checkpoint's own ingest (its preprocessing settings and tokenizer, as ``mm-ray
evaluate`` does), then through a pool of ``CheckpointGenerator`` actors: each rebuilds the model and returns,
per sample and draw, the encoded files (PNG for an image; for audio a PNG plot of the log-mel and a WAV made by
Griffin-Lim, ``mm_ray.generation.media``). The driver writes them through a pyarrow filesystem, so ``out_dir``
may be object storage that no worker mounts:

    <out>/image/<key>_<draw>.png
    <out>/audio/<key>_<draw>.png   <out>/audio/<key>_<draw>.wav

(``<key>`` as ``mm_ray.data.keys.key_file_name`` makes it one safe file name: a key such as ``../../x`` or
``a/b`` is written inside its folder, with a short hash of the key appended.)
    <out>/generated.json           the summary below

Only generative presets can do this (``mvae``: image or audio from any subset of its modalities; ``cgan``: image
from text); any other checkpoint is refused with a ``CheckpointError`` naming what it cannot generate.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray
import ray.data

from mm_ray.columns import KEY, LABEL
from mm_ray.data.keys import key_file_name
from mm_ray.data.pipeline import Ingest, preprocessor_kwargs
from mm_ray.generation.targets import DEFAULT_SOURCES, TARGETS
from mm_ray.modalities.audio import AUDIO
from mm_ray.progress import ProgressFactory, watch
from mm_ray.runtime import init_ray
from mm_ray.train.checkpoint import CheckpointError, LoadedCheckpoint, open_for_shards

SUMMARY_FILE = "generated.json"


class CheckpointGenerator:
    """A Ray Data actor: numpy batches of model-ready columns -> one row per (sample, draw) with its files.

    Output columns: ``__key__``, ``label``, ``draw`` and ``png`` (bytes), plus ``wav`` (bytes) for audio.
    """

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        *,
        sources: tuple[str, ...],
        target: str,
        samples: int,
        seed: int,
        audio_kwargs: dict[str, Any],
    ):
        import torch

        from mm_ray.modalities.audio_decode import AudioPreprocessor

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = checkpoint.restore_model(self.device)
        self.sources, self.target, self.samples = sources, target, samples
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        self.audio = AudioPreprocessor(**audio_kwargs) if target == AUDIO.name else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from mm_ray.generation.media import griffin_lim, image_png, mel_png, wav_bytes
        from mm_ray.train.loop import to_device

        with torch.inference_mode():
            drawn = self.model.generate(
                to_device(batch, self.device),
                target=self.target,
                sources=self.sources,
                samples=self.samples,
                generator=self.rng,
            )
        drawn = drawn.float().cpu().numpy()
        rows: dict[str, list] = {KEY: [], LABEL: [], "draw": [], "png": [], "wav": []}
        for i, key in enumerate(batch[KEY]):
            for d in range(self.samples):
                rows[KEY].append(key)
                rows[LABEL].append(batch[LABEL][i])
                rows["draw"].append(d)
                if self.audio is None:
                    rows["png"].append(image_png(drawn[i, d]))
                    continue
                hop_seconds = self.audio.hop_length / self.audio.sample_rate
                rows["png"].append(mel_png(drawn[i, d], title=f"{key} #{d}", hop_seconds=hop_seconds))
                rows["wav"].append(wav_bytes(griffin_lim(drawn[i, d], self.audio), self.audio.sample_rate))
        if self.audio is None:
            del rows["wav"]
        return {name: np.array(values, dtype=object if name in ("png", "wav") else None)
                for name, values in rows.items()}  # fmt: skip


def generate(
    checkpoint: str | Path,
    specs: str | Sequence[str] = (),
    *,
    sources: Sequence[str] = DEFAULT_SOURCES,
    target: str = TARGETS[0],
    samples: int = 1,
    out_dir: str | None = None,
    actors: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    overrides: Sequence[str] = (),
    config_file: str | Path | None = None,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Generate ``samples`` draws of ``target`` from ``sources`` for every sample of the shards ``specs``
    (default: the config's ``data.val_shards``) and write them under ``out_dir``; returns the summary.

    ``checkpoint``: a checkpoint or run directory (its latest checkpoint). ``actors`` generator actors take
    ``batch_size`` rows at a time (a GPU each where the cluster has GPUs). ``overrides`` / ``config_file`` lay over
    the checkpoint's saved config (pools, ``ray.*``). Raises ``CheckpointError`` when the checkpoint's model
    cannot generate ``target`` from ``sources``, and what ``mm-ray evaluate`` raises for bad paths and shards.
    """
    started = time.perf_counter()
    sources = tuple(sources)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    ckpt, cfg, specs = open_for_shards(checkpoint, specs, overrides, config_file, purpose="generate")
    check_can_generate(ckpt, sources, target)
    if target == AUDIO.name and cfg.audio.features != "log_mel":
        raise CheckpointError(
            f"{ckpt.directory}: audio is generated as log-mels; this model reads {cfg.audio.features}"
        )
    run_dir = ckpt.picked_from or ckpt.directory.parent
    out = str(out_dir) if out_dir is not None else str(run_dir / "generated")
    init_ray(cfg.ray)
    gpus = 1.0 if ray.cluster_resources().get("GPU", 0.0) >= 1 else 0.0
    ingest = Ingest.from_config(cfg, specs, ckpt.tokenizer_json, reserved_cpus=float(actors))
    kwargs = {"sources": sources, "target": target, "samples": samples, "seed": seed,
              "audio_kwargs": preprocessor_kwargs(cfg, ckpt.tokenizer_json)[AUDIO.name]}  # fmt: skip
    generated = ingest.dataset.map_batches(
        CheckpointGenerator,
        fn_constructor_kwargs={"checkpoint": ckpt, **kwargs},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=1.0,
        num_gpus=gpus,
    )
    fs, root = output_filesystem(out)
    fs.create_dir(f"{root}/{target}", recursive=True)
    files = 0
    with watch(progress, "generate", lambda: ingest.summary()["samples_read"]):
        for batch in generated.iter_batches(batch_size=256, batch_format="numpy"):
            files += _write_batch(fs, f"{root}/{target}", batch)
    summary = ingest.finish()
    result = {
        "checkpoint": str(ckpt.directory),
        "preset": ckpt.loop.model.preset,
        "from": list(sources),
        "to": target,
        "samples_per_input": samples,
        "inputs": summary["samples_read"] - summary["samples_quarantined"],
        "quarantined": summary["samples_quarantined"],
        "files": files,
        "out": out,
        "seconds": round(time.perf_counter() - started, 2),
    }
    with fs.open_output_stream(f"{root}/{SUMMARY_FILE}") as f:
        f.write((json.dumps(result, indent=2) + "\n").encode())
    return result


def check_can_generate(ckpt: LoadedCheckpoint, sources: tuple[str, ...], target: str) -> None:
    """``CheckpointError`` unless the checkpoint's model generates ``target`` from ``sources``."""
    from mm_ray.models.presets import GENERATIVE_FAMILIES, PRESETS

    preset = ckpt.loop.model.preset
    if PRESETS[preset].family not in GENERATIVE_FAMILIES:
        raise CheckpointError(
            f"{ckpt.directory}: preset {preset!r} cannot generate; train a generative preset "
            f"({', '.join(GENERATIVE_FAMILIES)}: model.preset=mvae or model.preset=cgan)"
        )
    can = ckpt.restore_model().generates  # the one way to a checkpoint's model: it checks the builder
    if target not in can or not sources or not set(sources) <= set(can[target]):
        offered = "; ".join(f"{t} from {'/'.join(s)}" for t, s in can.items())
        raise CheckpointError(
            f"{ckpt.directory}: preset {preset!r} cannot generate {target} from {'+'.join(sources)}; "
            f"it generates: {offered}"
        )


def output_filesystem(out: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, root path in it) of a local path or a URI such as ``s3://bucket/prefix``."""
    if "://" in out and not out.startswith("file://"):
        return pafs.FileSystem.from_uri(out)
    path = Path(out.removeprefix("file://")).resolve()
    return pafs.LocalFileSystem(), str(path)


def _write_batch(fs: pafs.FileSystem, folder: str, batch: dict[str, np.ndarray]) -> int:
    written = 0
    for i, key in enumerate(batch[KEY]):
        draw = int(batch["draw"][i])
        for column, suffix in (("png", ".png"), ("wav", ".wav")):
            if column in batch:
                # The key is shard data: it names one file in ``folder``, never a path (mm_ray.data.keys).
                with fs.open_output_stream(f"{folder}/{key_file_name(str(key), f'_{draw}{suffix}')}") as f:
                    f.write(bytes(batch[column][i]))
                written += 1
    return written

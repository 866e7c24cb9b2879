"""``mm-ray bench generate``: do the generative presets draw the topic a caption names? Measured, not eyeballed.

    summary = bench_generation(load_config("pipelines/generate.yaml"), "runs/generate")   # -> GenerationBench
    print(generation_table(summary.rows))

On the demo benchmark the caption names a topic and the image's background colour shows the same topic. The
benchmark makes demo shards and their caches (``mm_ray.demo``), then trains three models with the plain loop
every trainer shares (``loop_epoch``; one process, no Ray Train):

- ``unimodal_image`` on the *topic* (the colour each real image was rendered with) instead of the label: a
  topic reader trained on real images only;
- ``mvae`` and ``cgan`` on the usual label (their classifiers) and their generative losses.

For every validation caption it draws one image from the text alone and reads its topic back (a) from the
background colour (``mm_ray.bench.topics``, independent of any model) and (b) with the topic reader; the
reference is the topic the caption names. Real validation images are scored the same way (their colour is
itself corrupted at the benchmark's rate, so they agree with their caption less than perfectly), and chance is
1/K. Diversity: the mean pairwise distance of ``samples`` draws for one caption per topic (RMS per pixel, 0..1),
beside that of real images of one topic. A grid PNG shows, per topic, real images and each model's draws.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from mm_ray.bench.records import GenerationBench, GenerationRow, GeneratorTraining
from mm_ray.bench.topics import colour_topics, pairwise_distance
from mm_ray.bench.train import cache_columns, plain_trainer, shuffled_batches
from mm_ray.columns import KEY, LABEL
from mm_ray.config.schema import Config
from mm_ray.demo.dataset import shard_paths
from mm_ray.demo.shards import shard_file_name, shard_latents
from mm_ray.generation.media import image_grid
from mm_ray.modalities.image import IMAGE
from mm_ray.modalities.text import TEXT
from mm_ray.progress import ProgressFactory
from mm_ray.tables import format_table
from mm_ray.train.loop import loop_epoch

logger = logging.getLogger(__name__)

MODELS = {"mvae": (IMAGE.name, TEXT.name), "cgan": (IMAGE.name, TEXT.name)}
"""The generative presets compared, and the modalities each trains on: the two the measured direction (text ->
image) needs; an audio encoder and decoder would only add cost here (``mm-ray generate --to audio`` uses them)."""
READER = "unimodal_image"
_KEY = re.compile(r"^(train|val)(\d+)_(\d+)$")


def bench_generation(
    cfg: Config,
    work_dir: str | Path,
    *,
    samples: int = 8,
    epochs: dict[str, int] | None = None,
    presets: tuple[str, ...] = tuple(MODELS),
    grid_path: str | Path | None = None,
    progress: ProgressFactory | None = None,
) -> GenerationBench:
    """Train the reader and the generative presets on ``cfg``'s demo data under ``work_dir``, measure them.

    ``epochs``: per model (``unimodal_image``, ``mvae``, ``cgan``); by default the reader 2 (it reaches 100 % on
    real images), ``mvae`` ``cfg.train.epochs`` and ``cgan`` 1.5 times that (its steps are cheaper, and the
    adversarial game learns slower). ``presets``: which of ``MODELS`` to train and score (the real images and
    the reader always are). Returns the table's rows, the topics K, how each model trained and the grid's path.
    """
    from mm_ray.demo.dataset import reuse_or_write
    from mm_ray.demo.run import demo_caches

    unknown = sorted(set(presets) - set(MODELS))
    if unknown or not presets:
        raise ValueError(f"presets must name some of {list(MODELS)}, got {list(presets)}")
    presets = tuple(m for m in MODELS if m in presets)
    work_dir = Path(work_dir)
    manifest = reuse_or_write(cfg.demo, work_dir / "shards", progress)
    shards = {split: shard_paths(work_dir / "shards", split) for split in ("train", "val")}
    caches = demo_caches(cfg, work_dir, shards, manifest, progress)
    data = {split: _columns(cache.uri) for split, cache in caches.items()}
    topics = {split: _image_topics(data[split][KEY], manifest) for split in data}
    k = int(manifest["num_symbols"])
    models, train = {}, {}
    for name in (READER, *presets):
        columns = dict(data["train"])
        if name == READER:
            columns[LABEL] = topics["train"]["image_color"]
        default = {READER: 2, "mvae": cfg.train.epochs, "cgan": cfg.train.epochs * 3 // 2}[name]
        n_epochs = (epochs or {}).get(name, default)
        models[name], train[name] = _train(cfg, name, caches["train"], columns, n_epochs, k)
    val = data["val"]
    rows = [_score_real(models[READER], val, topics["val"], k)]
    generated = {}
    for name in presets:
        row, generated[name] = _score_model(
            name, models[name], models[READER], val, topics["val"], k, samples
        )
        rows.append(row)
    grid = Path(grid_path) if grid_path else work_dir / "generation_grid.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    real = _real_examples(val, topics["val"]["text_topic"], k, samples)
    grid.write_bytes(image_grid(np.concatenate([real[:, None], *(g[:, None] for g in generated.values())], 1)
                                .reshape(-1, samples, *real.shape[2:])))  # fmt: skip
    return GenerationBench(rows=tuple(rows), topics=k, train=train, grid=str(grid), samples=samples,
                           grid_rows="per topic: real images, then " + ", then ".join(presets))  # fmt: skip


def generation_table(rows: Sequence[GenerationRow]) -> str:
    """The benchmark's rows as a table."""
    headers = ["images", "topic by colour", "topic by classifier", "chance", "diversity (one caption)"]
    body = [[r.images, r.colour_topic, r.classifier_topic, r.chance, r.diversity] for r in rows]
    return format_table(headers, body)


def _columns(cache_uri: str) -> dict[str, np.ndarray]:
    """A cache's columns in memory, with its sample keys."""
    columns = cache_columns(cache_uri)
    columns[KEY] = np.asarray(pq.read_table(Path(cache_uri) / "data", columns=[KEY]).column(KEY).to_pylist())
    return columns


def _image_topics(keys: np.ndarray, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per key, the topic its caption names (``text_topic``) and its image shows (``image_color``): the demo's
    latents, recomputed from the key (split, shard, index) as the shard writer drew them."""
    out: dict[str, list[int]] = {"text_topic": [], "image_color": []}
    cache: dict[tuple[str, int], Any] = {}
    for key in keys:
        split, shard, index = _KEY.match(str(key)).groups()
        shard_id = (split, int(shard))
        if shard_id not in cache:
            cache[shard_id] = shard_latents(
                seed=manifest["seed"],
                split=split,
                shard_index=int(shard),
                num_samples=manifest["shard_counts"][shard_file_name(split, int(shard))],
                num_symbols=manifest["num_symbols"],
                corruption=manifest["corruption"],
            )
        for name in out:
            out[name].append(int(cache[shard_id].observed[name][int(index)]))
    return {name: np.array(values) for name, values in out.items()}


def _train(cfg: Config, preset: str, cache, columns, epochs: int, k: int):
    modalities = MODELS.get(preset, (IMAGE.name,))
    run = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, preset=preset, modalities=list(modalities)),
        train=dataclasses.replace(cfg.train, epochs=epochs, aux_loss_weight=0.0, align_loss_weight=0.0),
    )
    num_classes = k if preset == READER else cache.num_classes
    loop, model, optimizer, scheduler = plain_trainer(
        run, shapes=cache.shapes, tokenizer_json=cache.tokenizer_json, num_classes=num_classes,
        rows=len(columns[LABEL]), preprocessing=cache.preprocessing,
    )  # fmt: skip
    numeric = {n: c for n, c in columns.items() if n != KEY}
    started, stats = time.perf_counter(), {}
    for epoch in range(epochs):
        batches = shuffled_batches(numeric, loop.batch_size, loop.seed + epoch)
        stats = loop_epoch(model, batches, optimizer, scheduler, loop, device="cpu")
        logger.info("bench generate: %s epoch %d/%d %s", preset, epoch + 1, epochs, _short(stats))
    seconds = time.perf_counter() - started
    return model.eval(), GeneratorTraining(epochs=epochs, seconds=round(seconds, 1), last_epoch=_short(stats))


def _short(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}


def _read_topics(reader, images: np.ndarray) -> np.ndarray:
    """The topic reader's predictions for uint8 images ``[N, 3, S, S]``."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), 256):
            out.append(
                reader({IMAGE.column: torch.from_numpy(images[start : start + 256])}).argmax(-1).numpy()
            )
    return np.concatenate(out)


def _score_real(reader, val, topics, k: int) -> GenerationRow:
    images = val[IMAGE.column]
    truth = topics["text_topic"]
    by_topic = [images[truth == t][:8].astype(np.float32) / 255.0 for t in range(k)]
    return GenerationRow(
        images="real (val)",
        colour_topic=float((colour_topics(images, k) == truth).mean()),
        classifier_topic=float((_read_topics(reader, images) == truth).mean()),
        colour_vs_rendered=float((colour_topics(images, k) == topics["image_color"]).mean()),
        classifier_vs_rendered=float((_read_topics(reader, images) == topics["image_color"]).mean()),
        chance=1.0 / k,
        diversity=float(np.mean([pairwise_distance(x) for x in by_topic if len(x) > 1])),
    )


def _score_model(name, model, reader, val, topics, k: int, samples: int):
    truth = topics["text_topic"]
    text = {c: torch.from_numpy(np.ascontiguousarray(v)) for c, v in val.items()
            if c in (*TEXT.column_names, TEXT.presence_column)}  # fmt: skip
    rng = torch.Generator().manual_seed(0)
    drawn = []
    for start in range(0, len(truth), 256):
        part = {c: v[start : start + 256] for c, v in text.items()}
        drawn.append(
            model.generate(part, target=IMAGE.name, sources=(TEXT.name,), samples=1, generator=rng)[:, 0]
        )
    images = _to_uint8(torch.cat(drawn).numpy())
    # One caption per topic (the first naming it), ``samples`` draws each: the grid and the diversity.
    first = [int(np.flatnonzero(truth == t)[0]) for t in range(k)]
    part = {c: v[first] for c, v in text.items()}
    per_caption = model.generate(
        part, target=IMAGE.name, sources=(TEXT.name,), samples=samples, generator=rng
    ).numpy()
    row = GenerationRow(
        images=f"{name}: generated from text",
        colour_topic=float((colour_topics(images, k) == truth).mean()),
        classifier_topic=float((_read_topics(reader, images) == truth).mean()),
        chance=1.0 / k,
        diversity=float(np.mean([pairwise_distance(x) for x in per_caption])),
    )
    return row, per_caption


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def _real_examples(val, truth: np.ndarray, k: int, samples: int) -> np.ndarray:
    """``[k, samples, 3, S, S]`` real validation images in [0, 1], ``samples`` per topic their caption names."""
    rows = []
    for t in range(k):
        picked = val[IMAGE.column][truth == t][:samples].astype(np.float32) / 255.0
        pad = np.ones((samples - len(picked), *picked.shape[1:]), dtype=np.float32)
        rows.append(np.concatenate([picked, pad]))
    return np.stack(rows)

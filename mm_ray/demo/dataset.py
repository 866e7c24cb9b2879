"""Generate the synthetic tri-modal benchmark: shards + a ``dataset.json`` manifest with the exact optimum.

Usage::

    from mm_ray.demo.dataset import make_shards, load_manifest, shard_paths

    manifest = make_shards("data/demo", num_samples=10_000, seed=0, workers=4)
    manifest["bayes_accuracy"], manifest["caps"]["image"], manifest["additive_fusion"]
    train_files = shard_paths("data/demo", "train")
    make_shards("data/demo4", num_samples=10_000, features_dim=16)   # + a .npy member: 15 subsets' caps

The out dir gets ``train-000000.tar ...``, ``val-000000.tar ...`` and ``dataset.json`` (written last, so its
presence means the dataset is complete). The same arguments give byte-identical shards whatever ``workers``
is. Re-running into a directory overwrites the planned shards but leaves other files alone: the manifest, not
a glob, is the list of shards.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed

from mm_ray.config.schema import DemoConfig
from mm_ray.demo.bayes import reference_numbers
from mm_ray.demo.latents import check_params, label_rule_text
from mm_ray.demo.render_audio import SAMPLE_RATES, pitch_frequencies
from mm_ray.demo.render_features import NOISE_STD, check_dim
from mm_ray.demo.render_image import PALETTE, SHAPES
from mm_ray.demo.render_text import TOPIC_WORDS
from mm_ray.demo.shards import SPLITS, ShardSpec, shard_file_name, write_shard
from mm_ray.progress import ProgressFactory, watch

logger = logging.getLogger(__name__)

MANIFEST_NAME = "dataset.json"
FORMAT_VERSION = 1
# below this many samples a process pool's start-up (~1-2 s per worker) costs more than it saves
AUTO_PARALLEL_SAMPLES = 2000


def plan_splits(num_samples: int, samples_per_shard: int, val_fraction: float) -> dict[str, list[int]]:
    """Shard sizes per split: val gets ``round(num_samples * val_fraction)`` samples, train the rest."""
    if num_samples < 1 or samples_per_shard < 1 or not 0.0 <= val_fraction < 1.0:
        raise ValueError("need num_samples >= 1, samples_per_shard >= 1 and 0 <= val_fraction < 1")
    num_val = round(num_samples * val_fraction)
    plan = {}
    for split, count in zip(SPLITS, (num_samples - num_val, num_val), strict=True):
        full, rest = divmod(count, samples_per_shard)
        plan[split] = [samples_per_shard] * full + ([rest] if rest else [])
    return plan


def _run(specs: list[ShardSpec], workers: int, progress: Callable[[int, int], None] | None) -> list[dict]:
    total, done, stats = sum(s.num_samples for s in specs), 0, []

    def finished(result: dict) -> None:
        nonlocal done
        stats.append(result)
        done += result["num_samples"]
        if progress is not None:
            progress(done, total)

    if workers <= 1:
        for spec in specs:
            finished(write_shard(spec))
    else:
        # spawn, not fork: the caller may hold threads (Ray, torch) that a forked child would inherit locked
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for future in as_completed([pool.submit(write_shard, spec) for spec in specs]):
                finished(future.result())
    return sorted(stats, key=lambda s: (SPLITS.index(s["split"]), s["index"]))


def _format_mix(stats: Iterable[dict], features: bool) -> dict:
    counts: Counter = Counter()
    for s in stats:
        counts.update(s["formats"])

    def pick(names, prefix: str = "") -> dict[str, int]:
        return {str(n): counts.get(f"{prefix}{n}", 0) for n in names}

    return {
        "image": pick(("jpg", "png")),
        "audio": pick(("wav", "flac")),
        "text": pick(("txt", "json")),
        **({"features": pick(("npy",))} if features else {}),
        "sample_rate": pick(SAMPLE_RATES, "sr_"),
        "channels": pick((1, 2), "channels_"),
    }


def _rendering(num_symbols: int, features_dim: int) -> dict:
    """What each symbol looks / sounds / reads like, for people inspecting the data."""
    features = {
        "style_vectors": f"float32 [{features_dim}]: one of {num_symbols} orthonormal prototypes + N(0, "
        f"{NOISE_STD}^2) noise in the other {features_dim - num_symbols} directions"
    }
    return {
        "topic_colors": [name for name, _ in PALETTE[:num_symbols]],
        "topic_words": [list(w) for w in TOPIC_WORDS[:num_symbols]],
        "shapes": list(SHAPES[:num_symbols]),
        "pitch_hz": [round(float(f), 1) for f in pitch_frequencies(num_symbols)],
        **(features if features_dim else {}),
    }


def make_shards(
    out_dir: str | os.PathLike,
    *,
    num_samples: int,
    samples_per_shard: int = 500,
    val_fraction: float = 0.2,
    seed: int = 0,
    num_symbols: int = 4,
    corruption: dict[str, float] | None = None,
    image_size: tuple[int, int] = (256, 512),
    features_dim: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the benchmark's shards and ``dataset.json`` into ``out_dir``; returns the manifest.

    ``corruption`` maps rendered-symbol names (``latents.observations(features)``) to rates; missing ones take
    ``DEFAULT_CORRUPTION`` (``DEFAULT_FEATURES_CORRUPTION`` for the style). ``features_dim > 0`` writes the
    features variant (a ``.npy`` vector per sample, the style in the label rule, caps of all 15 subsets); 0 keeps
    the three-modality benchmark, shards and manifest byte for byte. ``image_size`` is the (min, max) side in pixels. ``workers=None`` uses one
    process per CPU (capped by the shard count) for datasets of ``AUTO_PARALLEL_SAMPLES`` or more, else
    renders in this process. ``progress(done_samples, total_samples)`` is called here as shards finish.
    """
    features = features_dim > 0
    rates = check_params(num_symbols, corruption, features=features)
    if features:
        check_dim(features_dim, num_symbols)
    if not 1 <= image_size[0] <= image_size[1]:
        raise ValueError(f"image_size must be (min, max) with 1 <= min <= max, got {image_size}")
    os.makedirs(out_dir, exist_ok=True)
    plan = plan_splits(num_samples, samples_per_shard, val_fraction)
    common = {"seed": seed, "num_symbols": num_symbols, "corruption": rates, "image_size": tuple(image_size)}
    specs = [
        ShardSpec(path=os.path.join(out_dir, shard_file_name(split, index)), split=split, index=index,
                  num_samples=count, features_dim=features_dim, **common)
        for split, sizes in plan.items()
        for index, count in enumerate(sizes)
    ]  # fmt: skip
    if workers is None:
        workers = (os.cpu_count() or 1) if num_samples >= AUTO_PARALLEL_SAMPLES else 1
    stats = _run(specs, min(workers, len(specs)), progress)
    manifest = {
        "format_version": FORMAT_VERSION,
        **common,
        "image_size": list(image_size),
        # only in the features variant: the three-modality manifest stays as it was
        **({"features_dim": features_dim} if features else {}),
        "label_rule": label_rule_text(num_symbols, features=features),
        "counts": {"total": num_samples, **{split: sum(sizes) for split, sizes in plan.items()}},
        "shards": {split: [s["file"] for s in stats if s["split"] == split] for split in SPLITS},
        "shard_counts": {s["file"]: s["num_samples"] for s in stats},
        **reference_numbers(num_symbols=num_symbols, corruption=rates, features=features),
        "format_mix": _format_mix(stats, features),
        "rendering": _rendering(num_symbols, features_dim),
    }
    _write_json(os.path.join(out_dir, MANIFEST_NAME), manifest)
    return manifest


def _write_json(path: str, data: dict) -> None:
    # written to a temp name and renamed: a reader never sees half a manifest
    tmp_path = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp_path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp_path, path)


def _manifest_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    return os.path.join(path, MANIFEST_NAME) if os.path.isdir(path) else path


def load_manifest(path: str | os.PathLike) -> dict:
    """Read a manifest; ``path`` is the dataset directory or the ``dataset.json`` file itself."""
    with open(_manifest_file(path), encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported manifest format_version {manifest.get('format_version')!r}")
    return manifest


def shard_paths(path: str | os.PathLike, split: str) -> list[str]:
    """Paths of the shards of ``split``, resolved against the manifest's directory."""
    root = os.path.dirname(os.path.abspath(_manifest_file(path)))
    return [os.path.join(root, name) for name in load_manifest(path)["shards"][split]]


def write_dataset(
    demo: DemoConfig, out_dir: str | os.PathLike, progress: ProgressFactory | None = None
) -> dict:
    """``make_shards`` with the settings of a config's ``demo`` section; returns the manifest."""
    done = [0]

    def advance(samples: int, _total: int) -> None:
        done[0] = samples

    with watch(progress, "make-shards", lambda: done[0], demo.num_samples):
        return make_shards(
            out_dir,
            num_samples=demo.num_samples,
            samples_per_shard=demo.samples_per_shard,
            val_fraction=demo.val_fraction,
            seed=demo.seed,
            image_size=(demo.min_image_px, demo.max_image_px),
            features_dim=demo.features_dim,
            progress=advance,
        )


def reuse_or_write(
    demo: DemoConfig, shard_dir: str | os.PathLike, progress: ProgressFactory | None = None
) -> dict:
    """The manifest of the shards in ``shard_dir`` when they were generated with ``demo``'s settings, else
    those of freshly generated ones."""
    try:
        manifest = load_manifest(shard_dir)
        same = (
            manifest["seed"] == demo.seed
            and manifest["counts"]["total"] == demo.num_samples
            and manifest["image_size"] == [demo.min_image_px, demo.max_image_px]
            and manifest.get("features_dim", 0) == demo.features_dim
            # shards written by code with another label rule are not this benchmark
            and manifest["label_rule"]
            == label_rule_text(manifest["num_symbols"], features=demo.features_dim > 0)
            and manifest["counts"]["val"] == round(demo.num_samples * demo.val_fraction)
            and all(size <= demo.samples_per_shard for size in manifest["shard_counts"].values())
        )
        if same:
            logger.info("reusing demo shards in %s", shard_dir)
            return manifest
    except (FileNotFoundError, ValueError, KeyError):
        pass
    return write_dataset(demo, shard_dir, progress)

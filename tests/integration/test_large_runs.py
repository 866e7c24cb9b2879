"""Large-run options on Ray Train: step checkpoints that resume mid-epoch exactly, FSDP with distributed
validation, checkpoints across strategies and worker counts. Two CPU workers (gloo) on a local Ray.

The exact-resume tests record every trained sample's id (``train.sample_log``; an id is a hash of shard and
key, ``mm_ray.data.sample_ids``) and compare the multiset of one epoch interrupted by a killed worker (the
samples in the step checkpoint's position, plus those the restarted group trained) with an uninterrupted
epoch's: every sample of the training set exactly once.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mm_ray.columns import KEY, SHARD
from mm_ray.config.load import load_config
from mm_ray.data.build import build_cache
from mm_ray.data.sample_ids import sample_ids
from mm_ray.demo.dataset import make_shards
from mm_ray.train.checkpoint import latest_checkpoint, open_checkpoint
from mm_ray.train.evaluate import evaluate
from mm_ray.train.metrics import DEFAULT_REGISTRY, evaluate_subsets
from mm_ray.train.position import DataPosition
from mm_ray.train.ray_trainer import fit

SUBSETS = DEFAULT_REGISTRY.subsets()

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CACHE = ("image.size=32", "audio.n_mels=16", "audio.duration_s=0.5", "text.max_length=16")
TINY_MODEL = ("model.width=8", "model.depth=1", "model.fusion_dim=8", "model.dropout=0.0")


def _shards(tmp_path_factory, n: int) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp(f"shards{n}")
    return out, make_shards(out, num_samples=n, samples_per_shard=12, image_size=(48, 64), workers=1)


def _caches(shards: Path, manifest: dict, out: Path) -> tuple[Path, Path]:
    cfg = load_config(None, CACHE)
    train = build_cache(cfg, [str(shards / s) for s in manifest["shards"]["train"]], str(out / "train"))
    build_cache(
        cfg,
        [str(shards / s) for s in manifest["shards"]["val"]],
        str(out / "val"),
        tokenizer_json=train.tokenizer_json,
    )
    return out / "train", out / "val"


@pytest.fixture(scope="module")
def even(tmp_path_factory):
    """52 demo samples: 42 to train on (21 per worker: Ray's equal split leaves none out), 10 to validate."""
    shards, manifest = _shards(tmp_path_factory, 52)
    return shards, manifest, _caches(shards, manifest, tmp_path_factory.mktemp("even_cache"))


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """44 demo samples: 35 to train on, 9 to validate (an odd set, split 2 ways)."""
    shards, manifest = _shards(tmp_path_factory, 44)
    return shards, manifest, _caches(shards, manifest, tmp_path_factory.mktemp("odd_cache"))


def _config(storage: Path, name: str, *overrides: str):
    return load_config(
        None,
        [
            *CACHE,
            *TINY_MODEL,
            f"name={name}",
            f"train.storage_path={storage}",
            f"output_dir={storage}",
            "train.num_workers=2",
            "train.cpus_per_worker=0.5",
            "train.batch_size=4",
            "train.warmup_steps=2",
            "train.checkpoints_to_keep=20",
            "track.tensorboard=false",
            *overrides,
        ],
    )


def _log(directory: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("rank*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def _keys_by_id(cache: Path) -> dict[int, str]:
    table = pq.read_table(cache / "data", columns=[KEY, SHARD])
    keys, shards = table.column(KEY).to_pylist(), table.column(SHARD).to_pylist()
    return dict(zip(sample_ids(shards, keys).tolist(), keys, strict=True))


def _step_position(run_dir: Path, global_step: int) -> DataPosition:
    for directory in sorted(run_dir.glob("checkpoint_*")):
        position = open_checkpoint(directory).state.get("position")
        if position and position["global_step"] == global_step and position["steps_in_epoch"]:
            return DataPosition.from_state(position)
    raise AssertionError(f"no step checkpoint at step {global_step} in {run_dir}")


def _exact_resume(tmp_path: Path, data_overrides: list[str], keys: dict[int, str]) -> None:
    whole = fit(
        _config(tmp_path / "whole", "whole", *data_overrides, f"train.sample_log={tmp_path / 'log_whole'}")
    )
    uninterrupted = collections.Counter(i for line in _log(tmp_path / "log_whole") for i in line["ids"])
    assert sorted(keys[i] for i in uninterrupted.elements()) == sorted(keys.values())  # each key once
    killed = fit(
        _config(
            tmp_path / "killed",
            "killed",
            *data_overrides,
            f"train.sample_log={tmp_path / 'log_killed'}",
            "train.checkpoint_every_steps=2",
            "train.fail_at_step=3",  # after the step-2 checkpoint: step 3 dies with the process
            "train.max_failures=1",
        )
    )
    lines = _log(tmp_path / "log_killed")
    assert {line["attempt_step"] for line in lines} == {0, 2}  # a second attempt, from the step-2 checkpoint
    before = _step_position(Path(killed.run_path), 2)
    # The checkpoint holds exactly what the first attempt trained in its first two steps ...
    first_two = collections.Counter(
        i for line in lines if line["attempt_step"] == 0 and line["global_step"] <= 2 for i in line["ids"]
    )
    assert collections.Counter(before.trained.tolist()) == first_two
    after = collections.Counter(i for line in lines if line["attempt_step"] == 2 for i in line["ids"])
    # ... and with what the restarted group trained it is every sample once: nothing replayed, nothing skipped.
    assert collections.Counter(before.trained.tolist()) + after == uninterrupted
    assert killed.history[0]["resumed_from_step"] == 2
    assert killed.history[0]["train_samples"] == whole.history[0]["train_samples"] == len(keys)
    assert killed.metrics["step"] == whole.metrics["step"]


def test_a_cache_epoch_interrupted_mid_way_resumes_without_repeating_or_skipping(
    even, tmp_path: Path
) -> None:
    _shards_dir, _manifest, (train, _val) = even
    _exact_resume(tmp_path, [f"train.cache={train}", "train.epochs=1"], _keys_by_id(train))


def test_a_streamed_epoch_interrupted_mid_way_resumes_without_repeating_or_skipping(
    even, tmp_path: Path
) -> None:
    shards, manifest, (train, _val) = even
    specs = json.dumps([str(shards / s) for s in manifest["shards"]["train"]])
    overrides = [f"data.shards={specs}", "model.num_classes=4", "train.epochs=1", "pools.fused.num_cpus=0.5"]
    # Streaming names samples by the shard URL it reads: the same keys, hashed with these URLs.
    table = pq.read_table(train / "data", columns=[KEY, SHARD])
    urls = {Path(u).name: str(shards / Path(u).name) for u in table.column(SHARD).to_pylist()}
    keys = table.column(KEY).to_pylist()
    ids = sample_ids([urls[Path(u).name] for u in table.column(SHARD).to_pylist()], keys)
    _exact_resume(tmp_path, overrides, dict(zip(ids.tolist(), keys, strict=True)))


def test_fsdp_run_validates_split_and_its_checkpoint_moves_across_strategies(odd, tmp_path: Path) -> None:
    shards, manifest, (train, val) = odd
    data = [f"train.cache={train}", f"train.val_cache={val}"]
    sharded = fit(_config(tmp_path, "fsdp", *data, "train.epochs=1", "train.strategy=fsdp"))
    metrics = sharded.metrics
    assert 0.45 < metrics["train_params_local_fraction"] < 0.55  # each worker held half the parameters
    # Distributed validation (9 samples split 2 ways, each rank its part, sums all-reduced) equals one
    # process scoring the checkpoint's model on the whole validation cache.
    ckpt = open_checkpoint(sharded.checkpoint)
    model = ckpt.restore_model("cpu")
    table = pq.read_table(val / "data")
    from mm_ray.bench.train import cache_columns

    columns = cache_columns(val)
    expected = evaluate_subsets(model, [columns], SUBSETS)
    assert metrics["val_samples"] == expected[DEFAULT_REGISTRY.full_subset]["samples"] == table.num_rows == 9
    for subset in SUBSETS:
        assert sharded.subsets[subset]["accuracy"] == expected[subset]["accuracy"]
        assert abs(sharded.subsets[subset]["loss"] - expected[subset]["loss"]) < 1e-5
    # mm-ray evaluate scores the sharded run's checkpoint in this one CPU process, from the raw val shards.
    scored = evaluate(sharded.checkpoint, [str(shards / s) for s in manifest["shards"]["val"]], device="cpu")
    assert (
        scored["samples"] == 9
        and scored["subsets"][DEFAULT_REGISTRY.full_subset]["accuracy"] == metrics["val_accuracy"]
    )
    # The FSDP checkpoint resumes under DDP on one worker (another strategy, another worker count).
    resumed = fit(_config(tmp_path, "fsdp", *data, "train.epochs=2", "train.num_workers=1"))
    assert [m["resumed_from"] for m in resumed.history] == [0, 1]
    assert resumed.metrics["train_params_local_fraction"] == 1.0
    assert latest_checkpoint(resumed.run_path)[1]["epoch"] == 2

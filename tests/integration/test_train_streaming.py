"""Training straight from shards: the ingest actor pools feed Ray Train workers, nothing written in between.

The shards are the demo's (plus one shard with bad samples made by ``shardkit``); the expected row counts
come from reading the same tar files with ``tarfile`` alone (``shardkit.read_tar_samples``), not from the
pipeline's own counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from cachekit import write_manifest
from shardkit import good_sample, read_tar_samples, write_samples

from mm_ray.config.load import load_config
from mm_ray.data.captions import obtain_tokenizer
from mm_ray.data.epochs import shuffled_per_epoch
from mm_ray.data.pipeline import Ingest
from mm_ray.demo.dataset import make_shards
from mm_ray.train.checkpoint import open_checkpoint
from mm_ray.train.ray_trainer import fit
from mm_ray.train.resume import finished_epochs

pytestmark = pytest.mark.integration

SMALL = ("image.size=32", "audio.n_mels=16", "audio.duration_s=0.5", "text.max_length=16")
TINY_MODEL = ("model.width=8", "model.depth=1", "model.fusion_dim=8", "model.num_classes=4")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, list[str]]:
    """The demo's train/val shards, and one more training shard with two bad samples among good ones."""
    out = tmp_path_factory.mktemp("stream_shards")
    manifest = make_shards(out, num_samples=120, samples_per_shard=20, image_size=(40, 64), workers=1)
    bad = good_sample(7, label=1)
    bad["jpg"] = b"not a jpeg at all"
    no_label = good_sample(8)
    del no_label["cls"]
    write_samples(
        out / "mixed.tar",
        {"m0": good_sample(1, label=0), "m1": bad, "m2": good_sample(2, label=3), "m3": no_label},
    )
    return {
        "train": [str(out / s) for s in manifest["shards"]["train"]] + [str(out / "mixed.tar")],
        "val": [str(out / s) for s in manifest["shards"]["val"]],
    }


def _config(shards: dict[str, list[str]], tmp_path: Path, *overrides: str):
    return load_config(
        None,
        [
            *SMALL,
            *TINY_MODEL,
            "name=stream",
            f"data.shards={json.dumps(shards['train'])}",
            f"data.val_shards={json.dumps(shards['val'])}",
            f"train.storage_path={tmp_path / 'storage'}",
            f"output_dir={tmp_path / 'out'}",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
            "train.batch_size=8",
            "train.warmup_steps=2",
            "text.tokenizer_train_samples=200",
            "text.vocab_size=200",
            "data.error_budget=0.2",
            *overrides,
        ],
    )


def _good_rows(specs: list[str]) -> int:
    """Samples with a label and a decodable image, counted from the tar files independently."""
    total = 0
    for spec in specs:
        for members in read_tar_samples(spec).values():
            total += "cls" in members and members.get("jpg") != b"not a jpeg at all"
    return total


def test_fit_streams_from_shards_and_counts_quarantine_every_epoch(shards, tmp_path: Path) -> None:
    first = fit(_config(shards, tmp_path, "train.epochs=2"))
    assert first.source == "shards"
    good = _good_rows(shards["train"])
    assert [m["train_samples"] for m in first.history] == [good, good]
    # Every epoch re-read the shards; the ledger counts each bad sample once, and each epoch's metrics say so.
    for epoch in first.history:
        assert epoch["ingest_samples_quarantined"] == 2
        assert epoch["quarantine/corrupt_image"] == 1
        assert epoch["quarantine/missing_label"] == 1
        assert epoch["val_samples"] == _good_rows(shards["val"])
    assert first.ingest["samples_quarantined"] == 2
    quarantined = [json.loads(line) for line in Path(first.ingest["quarantine_log"]).read_text().splitlines()]
    assert sorted(r["key"] for r in quarantined) == ["m1", "m3"]
    # The checkpoint records the preprocessing the stream applied, as a cache-trained one would.
    loaded = open_checkpoint(first.checkpoint)
    assert loaded.loop.resolved.image.size == 32 and loaded.loop.model.num_classes == 4


def test_stream_visits_shards_in_a_new_seeded_order_every_epoch(shards) -> None:
    # The seed fixes the order shards are handed to the pool. What comes out is in completion order, which Ray
    # Data may reorder even with one actor (its task dispatch is not FIFO), so the test asks Ray Data to keep
    # the hand-out order (``preserve_order``) and reads that order from the output.
    one_actor = ("pools.fused.min_size=1", "pools.fused.max_size=1")
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    cfg = load_config(None, [*SMALL, *one_actor, "text.tokenizer_train_samples=200", "text.vocab_size=200"])
    specs = shards["train"]
    tokenizer = obtain_tokenizer(cfg, specs)

    def shard_orders(seed: int, epochs: int, first_epoch: int = 0) -> list[list[str]]:
        stream = Ingest.from_config(cfg, specs, tokenizer, shuffle_seed=seed, first_epoch=first_epoch)
        orders = []
        for _ in range(epochs):
            seen: list[str] = []
            for batch in stream.dataset.iter_batches(batch_format="numpy", batch_size=None):
                for shard in batch["__shard__"]:
                    if not seen or seen[-1] != shard:
                        seen.append(str(shard))
            assert sorted(seen) == sorted(specs), "each shard once per epoch, in one piece"
            orders.append(seen)
        return orders

    try:
        a = shard_orders(seed=3, epochs=3)
        assert len({tuple(o) for o in a}) == 3, "every epoch reads the shards in another order"
        assert shard_orders(seed=3, epochs=3) == a, "the same seed gives the same orders"
        assert shard_orders(seed=4, epochs=1)[0] != a[0], "another seed, another order"
        # A run resumed after epoch 1 (a new driver, a new dataset) reads epochs 2 and 3 as the run above did.
        assert shard_orders(seed=3, epochs=2, first_epoch=1) == a[1:], "a resume keeps the epochs' orders"
    finally:
        ctx.execution_options.preserve_order = False


def test_the_training_stream_draws_new_crops_and_audio_windows_every_epoch(shards) -> None:
    cfg = load_config(
        None,
        [*SMALL, "train.augment.enabled=true", "text.tokenizer_train_samples=200", "text.vocab_size=200"],
    )
    specs = shards["val"]
    tokenizer = obtain_tokenizer(cfg, specs)

    def epochs(augment: bool, n: int = 2) -> list[dict[str, tuple[bytes, bytes]]]:
        stream = Ingest.from_config(cfg, specs, tokenizer, augment=augment)
        out = []
        for _ in range(n):
            rows = {}
            for batch in stream.dataset.iter_batches(batch_format="numpy", batch_size=None):
                for key, image, audio in zip(batch["__key__"], batch["image"], batch["audio"], strict=True):
                    rows[str(key)] = (image.tobytes(), audio.tobytes())
            out.append(rows)
        return out

    plain = epochs(augment=False)
    assert plain[0] == plain[1], "without augmentation every epoch decodes the same arrays"
    first, second = epochs(augment=True)
    assert first.keys() == second.keys() == plain[0].keys()
    changed_images = sum(first[k][0] != second[k][0] for k in first)
    changed_audio = sum(first[k][1] != second[k][1] for k in first)
    # 1 s demo clips, 0.5 s kept: every clip has a window to move; crops of >= 60 % of the area always differ.
    assert changed_images == len(first) and changed_audio >= 0.9 * len(first)
    assert all(first[k][0] != plain[0][k][0] for k in first), "the crop is not the plain centre crop"


def test_epoch_k_has_the_same_block_order_reached_fresh_or_after_a_resume() -> None:
    def orders(first_epoch: int, epochs: int) -> list[list[int]]:
        ds = ray.data.from_items([{"i": i} for i in range(12)], override_num_blocks=12)
        ds = shuffled_per_epoch(ds, seed=5, first_epoch=first_epoch)
        return [[row["i"] for row in ds.take_all()] for _ in range(epochs)]

    fresh = orders(0, 4)
    assert len({tuple(o) for o in fresh}) == 4
    for k in (1, 3):
        assert orders(k, 4 - k) == fresh[k:], f"resumed at epoch {k}"


def _label_cache(root: Path, rows: int) -> Path:
    """A cache of ``rows`` rows whose label is the row's index (only what reading it in order needs)."""
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.table({"label": pa.array(range(rows), pa.int64())}), root / "data" / "part-0.parquet")
    (root / "tokenizer.json").write_text("{}")
    shapes = {"image": [3, 2, 2], "input_ids": [2], "audio": [2, 2]}
    counts = {str(i): 1 for i in range(rows)}
    write_manifest(root, samples_ok=rows, shapes=shapes, label_counts=counts)
    return root


def test_a_resumed_cache_run_starts_its_shuffle_at_the_epoch_it_resumes(tmp_path: Path, monkeypatch) -> None:
    """A run resumed after epoch k reads the cache in epoch k's order, not epoch 0's again: the training dataset
    Ray Train builds at each worker-group start takes the epoch of the run's latest data position
    (``latest_position`` itself reads Ray Train's storage, tested with the step checkpoints)."""
    from types import SimpleNamespace

    from mm_ray.train import datasets, inputs

    cache = _label_cache(tmp_path / "cache", rows=1024)  # 4 blocks of 256 rows: an order to shuffle
    cfg = load_config(None, [f"train.cache={cache}", "train.shuffle=true", "train.seed=3",
                             f"output_dir={tmp_path}", "name=resumed", "train.num_workers=1"])  # fmt: skip
    fresh = inputs.cache_inputs(cfg).datasets["train"]()
    epochs = [[row["label"] for row in fresh.take_all()] for _ in range(3)]  # one execution per epoch
    assert len({tuple(order) for order in epochs}) == 3 and sorted(epochs[0]) == list(range(1024))
    # Its latest checkpoint: the end of epoch 2 (0-based epoch 2 starts next, no step of it trained).
    monkeypatch.setattr(
        datasets, "latest_position", lambda storage: SimpleNamespace(epoch=2, steps_in_epoch=0)
    )
    resumed = inputs.cache_inputs(cfg).datasets["train"]()
    assert [row["label"] for row in resumed.take_all()] == epochs[2]


def test_stream_drops_key_columns_before_the_workers(shards) -> None:
    cfg = load_config(None, [*SMALL, "text.tokenizer_train_samples=200", "text.vocab_size=200"])
    tokenizer = obtain_tokenizer(cfg, shards["val"])
    stream = Ingest.from_config(cfg, shards["val"], tokenizer, drop_columns=("__key__", "__shard__"))
    batch = next(iter(stream.dataset.iter_torch_batches(batch_size=4, dtypes=None)))
    assert "__key__" not in batch and "__shard__" not in batch
    assert tuple(batch["image"].shape) == (4, 3, 32, 32)


@pytest.mark.slow  # two runs, ~1.5 minutes on 2 cores
def test_a_streaming_run_resumes_by_name(shards, tmp_path: Path) -> None:
    fit(_config(shards, tmp_path, "train.epochs=1"))
    # What the driver reads before the workers start: the epochs the run's checkpoints already cover.
    assert finished_epochs(_config(shards, tmp_path)) == 1
    resumed = fit(_config(shards, tmp_path, "train.epochs=2"))
    assert resumed.epochs_run == 2
    assert [m["epoch"] for m in resumed.history] == [1, 2]
    assert resumed.history[-1]["resumed_from"] == 1


@pytest.mark.slow  # a two-trial sweep, each trial streaming: ~2 minutes on 2 cores
def test_a_sweep_streams_the_shards_in_every_trial(shards, tmp_path: Path) -> None:
    import yaml

    from mm_ray.tune.sweep import sweep

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"model.preset": {"choice": ["late_concat", "gated"]}}))
    cfg = _config(
        shards,
        tmp_path,
        "train.epochs=1",
        "train.cpus_per_worker=0.5",
        "tune.num_samples=2",
        f"tune.space={space}",
    )
    result = sweep(cfg)
    summary = result.summary
    assert summary["trials"] == 2 and summary["done"] + summary["stopped"] == 2
    assert summary["max_concurrent_trials"] == 1  # each streaming trial runs its own pools
    good = _good_rows(shards["train"])
    for record in result.records:
        last = record.history[-1]
        assert last["train_samples"] == good and last["ingest_samples_quarantined"] == 2
        assert last["val_samples"] == _good_rows(shards["val"])
    # Every trial decoded every sample it read (no cache): two trials x one epoch x (good + 2 bad).
    assert summary["decoded"]["trials"] == 2 * (good + 2)
    # One tokenizer, trained once, for every trial (token ids index one embedding table).
    assert Path(result.sweep.cfg.text.tokenizer).is_file()

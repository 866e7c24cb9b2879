"""Streaming with one Train worker reads the whole run in one Ray Data execution (``train.one_execution``): the
decoding actors start once, every epoch trains each good sample exactly once, and a step checkpoint taken in a
later epoch resumes that epoch without repeating or skipping a sample, the epochs after it in the same stream.

Expected ids come from the tar files themselves (``shardkit.read_tar_samples`` + the id hash), not from the
pipeline; the actor processes started are counted by watching this process's children.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest
from shardkit import read_tar_samples

from mm_ray.bench.measure import TreeMonitor
from mm_ray.config.load import load_config
from mm_ray.data.sample_ids import sample_ids
from mm_ray.demo.dataset import make_shards
from mm_ray.train.ray_trainer import fit

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # three training runs: ~3 minutes on 2 cores

SMALL = ("image.size=32", "audio.n_mels=16", "audio.duration_s=0.5", "text.max_length=16")
TINY_MODEL = ("model.width=8", "model.depth=1", "model.fusion_dim=8", "model.num_classes=4")
EPOCHS = 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("one_execution")
    manifest = make_shards(out, num_samples=60, samples_per_shard=10, image_size=(40, 64), workers=1)
    return [str(out / s) for s in manifest["shards"]["train"]]


def _expected_ids(urls: list[str]) -> collections.Counter:
    """Every labelled sample of the shards once, named as the stream names it (shard URL + key)."""
    pairs = [(u, key) for u in urls for key, members in read_tar_samples(u).items() if "cls" in members]
    return collections.Counter(sample_ids([u for u, _ in pairs], [k for _, k in pairs]).tolist())


def _config(shards: list[str], tmp_path: Path, name: str, *overrides: str):
    return load_config(
        None,
        [
            *SMALL,
            *TINY_MODEL,
            f"name={name}",
            f"data.shards={json.dumps(shards)}",
            f"train.storage_path={tmp_path / 'storage'}",
            f"output_dir={tmp_path / 'out'}",
            f"train.sample_log={tmp_path / name}",
            f"train.epochs={EPOCHS}",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
            "pools.fused.num_cpus=0.5",
            "train.batch_size=8",
            "train.shuffle_buffer=16",
            "train.warmup_steps=2",
            "train.checkpoints_to_keep=20",
            "text.tokenizer_train_samples=200",
            "text.vocab_size=200",
            "track.tensorboard=false",
            *overrides,
        ],
    )


def _ids_by_epoch(log_dir: Path) -> dict[int, collections.Counter]:
    out: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for path in sorted(log_dir.glob("rank*.jsonl")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            out[entry["epoch"]].update(entry["ids"])
    return out


def _decoding_actors(monitor: TreeMonitor) -> int:
    """Processes that ran as Ray Data map actors while ``monitor`` looked (a process per actor)."""
    return sum(n for group, n in monitor.processes_by_group().items() if group.startswith("ray::MapWorker"))


def test_one_execution_starts_the_actors_once_and_cuts_exact_epochs(shards, tmp_path: Path) -> None:
    with TreeMonitor(os.getpid(), interval=0.5, cpu_interval=0.25) as monitor:
        result = fit(_config(shards, tmp_path, "once"))
    expected = _expected_ids(shards)
    by_epoch = _ids_by_epoch(tmp_path / "once")
    assert sorted(by_epoch) == list(range(EPOCHS))
    for epoch in range(EPOCHS):
        assert by_epoch[epoch] == expected, f"epoch {epoch}: every sample once, none of another epoch"
    assert [h["train_samples"] for h in result.history] == [sum(expected.values())] * EPOCHS
    # Two actors of 0.5 CPU beside the worker's one CPU, started once for the three epochs (one execution per
    # epoch would have started six).
    assert _decoding_actors(monitor) == 2


def test_a_later_epoch_interrupted_mid_way_resumes_in_the_same_stream_exactly(shards, tmp_path: Path) -> None:
    expected = _expected_ids(shards)
    steps_per_epoch = -(-sum(expected.values()) // 8)
    # Step checkpoints every 2 steps; the process dies one step after the first checkpoint of epoch 2.
    first_in_epoch_2 = steps_per_epoch + 2 - steps_per_epoch % 2
    result = fit(
        _config(
            shards,
            tmp_path,
            "killed",
            "train.checkpoint_every_steps=2",
            f"train.fail_at_step={first_in_epoch_2 + 1}",
            "train.max_failures=1",
        )
    )
    lines = [
        json.loads(x) for p in (tmp_path / "killed").glob("rank*.jsonl") for x in p.read_text().splitlines()
    ]
    assert {line["attempt_step"] for line in lines} == {0, first_in_epoch_2}, (
        "restarted from the step checkpoint"
    )
    # The step the dying process took is lost with it: count only what the checkpoints and the restart kept.
    kept = [line for line in lines if line["attempt_step"] or line["global_step"] <= first_in_epoch_2]
    by_epoch: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in kept:
        by_epoch[line["epoch"]].update(line["ids"])
    assert sorted(by_epoch) == list(range(EPOCHS))
    for epoch in range(EPOCHS):
        assert by_epoch[epoch] == expected, f"epoch {epoch}: every sample once across the restart"
    assert result.epochs_run == EPOCHS
    assert [h["train_samples"] for h in result.history] == [sum(expected.values())] * EPOCHS

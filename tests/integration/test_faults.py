"""Faults the README promises the ingest survives, each done from outside as a crash would: a read task's process
and a preprocessing actor's process are SIGKILLed mid-stream. Ray Data retries the task and restarts the actor;
the samples that come out must be exactly the good ones of the shards (as ``tarfile`` alone reads them), none
lost and none twice, and the ledger's counts exactly the shards' (its records are idempotent, its per-shard
counts overwritten).

The processes are found by their titles (``tests/ray_processes.py``). ``slow``: ~30 s for the three.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from ray_processes import ray_processes, ray_titles
from shardkit import good_sample, read_tar_samples, write_samples

from mm_ray.config.load import load_config
from mm_ray.data.captions import obtain_tokenizer
from mm_ray.data.pipeline import Ingest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = ("image.size=32", "audio.duration_s=0.5", "audio.n_mels=32", "text.max_length=40")
SHARDS, PER_SHARD = 4, 100


def _shards(root: Path) -> tuple[set[str], set[str], int]:
    """Shards of good samples and one undecodable image each: (good keys, bad keys, samples in all)."""
    for s in range(SHARDS):
        samples = {f"s{s}k{i:03d}": good_sample((s * PER_SHARD + i) % 40) for i in range(PER_SHARD)}
        samples[f"s{s}k003"]["jpg"] = b"\xff\xd8 not a jpeg"
        write_samples(root / f"shard-{s:02d}.tar", samples)
    every = {k for p in sorted(root.glob("*.tar")) for k in read_tar_samples(p)}
    bad = {f"s{s}k003" for s in range(SHARDS)}
    return every - bad, bad, len(every)


class Killer(threading.Thread):
    """SIGKILLs the first process titled ``ray::<title>`` once it has run ``after_s`` seconds (mid-task, not at
    its start) and ``armed`` is set."""

    def __init__(self, title: str, after_s: float, timeout_s: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.title, self.after_s, self.timeout_s = title, after_s, timeout_s
        self.armed, self.done = threading.Event(), threading.Event()
        self.killed: tuple[int, str] | None = None

    def run(self) -> None:
        first_seen: dict[int, float] = {}
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline and not self.done.is_set():
            now = time.monotonic()
            for proc in ray_processes(self.title):
                first_seen.setdefault(proc.pid, now)
                if self.armed.is_set() and now - first_seen[proc.pid] >= self.after_s:
                    try:
                        title = proc.cmdline()[0]
                        proc.send_signal(signal.SIGKILL)
                    except psutil.NoSuchProcess:
                        continue
                    self.killed = (proc.pid, title)
                    return
            time.sleep(0.02)


def _stream_with_a_kill(tmp_path: Path, title: str, *, layout: str, after_s: float, armed_at_start: bool):
    good, bad, total = _shards(tmp_path)
    # Small blocks and batches, little object-store room (Ray Data's backpressure pauses the readers) and a
    # consumer that takes its time: the stream, and the task or actor to kill, are still running when it dies.
    settings = [
        "data.error_budget=1.0",
        "data.read_block_rows=2",
        "data.memory_limit_mb=4",
        f"pools.layout={layout}",
    ]
    cfg = load_config(None, [*SMALL, *settings])
    specs = [str(tmp_path)]
    ingest = Ingest.from_config(cfg, specs, obtain_tokenizer(cfg, specs))
    killer = Killer(title, after_s)
    killer.start()
    if armed_at_start:
        killer.armed.set()
    keys: list[str] = []
    for batch in ingest.dataset.iter_batches(batch_size=4, batch_format="numpy"):
        killer.armed.set()  # from the first batch on, at the latest
        keys += [str(k) for k in batch["__key__"]]
        time.sleep(0.02)
    killer.done.set()
    killer.join()
    summary = ingest.finish()
    assert killer.killed, f"no ray::{title} process ran long enough to kill mid-task; running: {ray_titles()}"
    assert len(keys) == len(set(keys)), "samples delivered twice"
    assert sorted(keys) == sorted(good), "samples lost"
    assert summary["samples_read"] == total and summary["samples_quarantined"] == len(bad)
    assert summary["quarantine_reasons"] == {"corrupt_image": len(bad)}


def test_a_read_task_killed_mid_shard_loses_and_repeats_nothing(tmp_path: Path) -> None:
    # Per-modality pools: shards are read by Ray Data read tasks (one per shard), then decoded by the pools.
    _stream_with_a_kill(tmp_path, "ReadShard", layout="per_modality", after_s=1.2, armed_at_start=True)


def test_a_preprocessing_actor_killed_mid_stream_loses_and_repeats_nothing(tmp_path: Path) -> None:
    _stream_with_a_kill(
        tmp_path,
        "MapWorker(MapBatches(ImageStage))",
        layout="per_modality",
        after_s=0.0,
        armed_at_start=False,
    )


def test_a_fused_actor_killed_mid_shard_loses_and_repeats_nothing(tmp_path: Path) -> None:
    # The fused layout (the default on one CPU node): the actor reads its shard and decodes it; killed mid-shard.
    _stream_with_a_kill(
        tmp_path, "MapWorker(MapBatches(ShardStage))", layout="fused", after_s=0.0, armed_at_start=False
    )

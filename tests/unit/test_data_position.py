"""The data position of a step checkpoint: sample ids, what a resumed epoch leaves out, which shards are done,
the position's round trip through a checkpoint file, and the step hook that takes step checkpoints."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import torch

from mm_ray.columns import KEY, SHARD
from mm_ray.config.load import load_config
from mm_ray.data.ledger import QuarantineLedger
from mm_ray.data.sample_ids import SAMPLE_ID, SHARD_ID, Resume, drop_trained, sample_ids, with_sample_ids
from mm_ray.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from mm_ray.train.position import DataPosition, PositionTracker, finished_shards, rng_state, set_rng_state
from mm_ray.train.spec import LoopConfig
from mm_ray.train.step_hook import StepHook
from tests.tiny_fusion import tiny_model


def _blake63(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def test_a_sample_id_is_a_63_bit_hash_of_shard_and_key():
    ids = sample_ids(["a.tar", "a.tar", "b.tar"], ["000", "001", "000"])
    assert ids.dtype == np.int64 and (ids >= 0).all()
    assert ids.tolist() == [_blake63("a.tar\x00000"), _blake63("a.tar\x00001"), _blake63("b.tar\x00000")]


def test_a_block_gets_its_ids_and_loses_its_trained_rows():
    table = pa.table({KEY: ["1", "2", "3"], SHARD: ["s.tar"] * 3, "label": [0, 1, 2]})
    named = with_sample_ids(table, shard_column=True)
    assert named.column(SHARD_ID).to_pylist() == [_blake63("s.tar")] * 3
    trained = np.sort(named.column(SAMPLE_ID).to_numpy()[[0, 2]])
    assert drop_trained(named, trained).column(KEY).to_pylist() == ["2"]
    assert drop_trained(table, trained).column("label").to_pylist() == [1]  # ids made from the strings
    assert drop_trained(table, np.zeros(0, np.int64)) is table
    assert not Resume(np.zeros(0)) and Resume(np.zeros(0), ["s.tar"])


def test_the_ledger_counts_the_good_samples_of_finished_shards_only():
    ledger = QuarantineLedger()
    ledger.shard_progress("a.tar", 10, done=True)
    ledger.shard_progress("b.tar", 4)  # still being read
    ledger.add([{"shard": "a.tar", "key": "3", "reason": "corrupt_image", "detail": ""}])
    assert ledger.good_samples() == {"a.tar": 9}


def test_a_shard_is_done_when_every_good_sample_was_trained():
    shard_a, shard_b = (int(x) for x in [_blake63("a.tar"), _blake63("b.tar")])
    trained_shards = np.array([shard_a] * 9 + [shard_b] * 3, dtype=np.int64)
    assert finished_shards(trained_shards, {"a.tar": 9, "b.tar": 4}) == {"a.tar"}


def test_the_tracker_merges_a_restored_position_and_drops_ids_of_finished_shards():
    shard = _blake63("a.tar")
    restored = DataPosition(
        epoch=2, global_step=10, steps_in_epoch=2, trained=np.array([5, 7]), trained_shards=np.array([shard, shard]),
        sums={"samples": 2.0},
    )  # fmt: skip
    tracker = PositionTracker(2, restored)
    tracker.add([{SAMPLE_ID: torch.tensor([3]), SHARD_ID: torch.tensor([_blake63("b.tar")])}])
    position = tracker.gather(global_step=11, steps_in_epoch=3, sums={"samples": 3.0})
    assert position.trained.tolist() == [3, 5, 7] and position.shards_done == ()
    done = tracker.gather(global_step=11, steps_in_epoch=3, sums={}, good_samples={"a.tar": 2, "b.tar": 5})
    assert done.shards_done == ("a.tar",) and done.trained.tolist() == [3]
    # A position of another epoch is not this epoch's.
    assert PositionTracker(3, restored).restored is None


def test_a_step_checkpoint_keeps_its_position_and_is_the_latest(tmp_path):
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    position = DataPosition(
        epoch=1, global_step=7, steps_in_epoch=3, trained=np.array([1, 9]), sums={"samples": 8.0}
    )
    save_checkpoint(tmp_path / "checkpoint_b", model=model, optimizer=optimizer, scheduler=None, epoch=1)
    save_checkpoint(
        tmp_path / "checkpoint_a", model=model, optimizer=optimizer, scheduler=None, epoch=1,
        extra={"position": position.to_state(), "rng": [rng_state()]},
    )  # fmt: skip
    state = load_checkpoint(
        tmp_path / "checkpoint_a"
    )  # weights_only: positions and RNG states are plain data
    back = DataPosition.from_state(state["position"])
    assert (back.epoch, back.global_step, back.trained.tolist(), back.sums) == (
        1,
        7,
        [1, 9],
        {"samples": 8.0},
    )
    assert (tmp_path / "checkpoint_a" / "position.pt").is_file()
    # Same finished epochs, but the step checkpoint is further along, whatever the names' order.
    assert latest_checkpoint(tmp_path)[0].name == "checkpoint_a"


def test_rng_states_round_trip():
    saved = rng_state()
    first = (np.random.rand(), torch.rand(1).item())
    set_rng_state(saved)
    assert (np.random.rand(), torch.rand(1).item()) == first


class _Scheduler:
    last_epoch = 0


def test_the_step_hook_checkpoints_every_n_optimizer_steps_and_logs_the_ids(tmp_path):
    cfg = load_config(None, [])
    loop = LoopConfig(
        model=None, resolved=cfg, checkpoint_every_steps=2, sample_log=str(tmp_path / "log")
    )  # fmt: skip
    saved: list[DataPosition] = []
    scheduler = _Scheduler()
    hook = StepHook(
        loop,
        epoch=0,
        tracker=PositionTracker(0),
        scheduler=scheduler,
        rank=0,
        attempt_step=0,
        save=saved.append,
    )
    for step in range(1, 6):
        scheduler.last_epoch = step
        batch = {SAMPLE_ID: torch.tensor([10 * step, 10 * step + 1]), "label": torch.tensor([0, 1])}
        hook(step, [batch], lambda n=2.0 * step: {"samples": n, "loss_sum": 1.0, "correct": 1.0})
    assert [p.global_step for p in saved] == [2, 4]
    assert saved[-1].trained.tolist() == [10, 11, 20, 21, 30, 31, 40, 41]
    assert saved[-1].sums["samples"] == 8.0
    lines = [json.loads(x) for x in (tmp_path / "log" / "rank0.jsonl").read_text().splitlines()]
    assert [line["ids"] for line in lines][:2] == [[10, 11], [20, 21]] and len(lines) == 5


def test_cache_rows_get_their_ids_and_a_resumed_epoch_leaves_out_the_trained_ones():
    from mm_ray.data.cache import _RowIds

    table = pa.table({KEY: ["1", "2", "3"], SHARD: ["s.tar"] * 3, "label": [0, 1, 2]})
    trained = sample_ids(["s.tar"], ["2"])
    out = _RowIds(sample_ids=True, resume=Resume(trained), drop=[KEY, SHARD])(table)
    assert out.column_names == ["label", SAMPLE_ID]  # the strings leave, the numeric id stays
    assert out.column("label").to_pylist() == [0, 2]
    assert out.column(SAMPLE_ID).to_pylist() == sample_ids(["s.tar", "s.tar"], ["1", "3"]).tolist()

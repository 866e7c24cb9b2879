"""RunEpochs: one ordered stream for a whole run, cut into exact epochs (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from mm_ray.train.epoch_stream import EPOCH, EpochOrderError, RunEpochs


def blocks_of(rows_per_epoch: dict[int, int], block_rows: int) -> list[dict[str, np.ndarray]]:
    """The stream as numpy blocks of ``block_rows`` rows cut across epoch boundaries: row ids count up over
    the whole run, ``EPOCH`` says each row's epoch."""
    epochs = np.concatenate([np.full(n, e, dtype=np.int32) for e, n in rows_per_epoch.items()])
    ids = np.arange(len(epochs))
    images = ids[:, None, None] * np.ones((1, 2, 2), dtype=np.int64)
    return [
        {
            EPOCH: epochs[i : i + block_rows],
            "id": ids[i : i + block_rows],
            "image": images[i : i + block_rows],
        }
        for i in range(0, len(ids), block_rows)
    ]


def epoch_ids(rows_per_epoch: dict[int, int]) -> dict[int, set[int]]:
    out, start = {}, 0
    for e, n in rows_per_epoch.items():
        out[e] = set(range(start, start + n))
        start += n
    return out


@pytest.mark.parametrize("shuffle_buffer", [0, 16])
@pytest.mark.parametrize("block_rows", [1, 7, 64])
def test_every_row_in_its_own_epoch_once(shuffle_buffer: int, block_rows: int) -> None:
    sizes = {2: 50, 3: 33, 4: 41}
    run = RunEpochs(blocks_of(sizes, block_rows), batch_size=8, shuffle_buffer=shuffle_buffer)
    expected = epoch_ids(sizes)
    for epoch in sizes:
        batches = list(run.epoch(epoch, seed=epoch))
        ids = np.concatenate([b["id"] for b in batches])
        assert sorted(ids.tolist()) == sorted(expected[epoch])
        assert all(EPOCH not in b for b in batches)
        # Full batches but the last; the other columns stay row-aligned with the ids.
        assert [len(b["id"]) for b in batches[:-1]] == [8] * (len(batches) - 1)
        for b in batches:
            assert (b["image"][:, 0, 0] == b["id"]).all()


def test_without_buffer_rows_keep_stream_order() -> None:
    sizes = {0: 20, 1: 10}
    run = RunEpochs(blocks_of(sizes, 6), batch_size=4)
    assert np.concatenate([b["id"] for b in run.epoch(0)]).tolist() == list(range(20))
    assert np.concatenate([b["id"] for b in run.epoch(1)]).tolist() == list(range(20, 30))


def test_shuffle_buffer_mixes_and_follows_its_seed() -> None:
    sizes = {0: 200}

    def order(seed: int) -> list[int]:
        run = RunEpochs(blocks_of(sizes, 10), batch_size=10, shuffle_buffer=50)
        return np.concatenate([b["id"] for b in run.epoch(0, seed=seed)]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert order(1) != list(range(200))
    # The first batch comes from the first buffer's rows only (rows 0..59: 50 buffered + the block that filled it).
    assert max(order(1)[:10]) < 60


def test_an_epoch_left_early_by_the_caller_is_not_mixed_into_the_next() -> None:
    sizes = {0: 30, 1: 30}
    run = RunEpochs(blocks_of(sizes, 25), batch_size=5)
    next(iter(run.epoch(0)))  # the caller took one batch of epoch 0 and moved on
    ids = np.concatenate([b["id"] for b in run.epoch(1)])
    assert set(ids.tolist()) <= set(range(30, 60))
    assert set(range(30, 60)) == set(ids.tolist())


def test_out_of_order_stream_raises() -> None:
    blocks = [{EPOCH: np.array([0, 1, 0], dtype=np.int32), "id": np.arange(3)}]
    with pytest.raises(EpochOrderError, match="preserve_order"):
        list(RunEpochs(blocks, batch_size=2).epoch(0))


def test_an_epoch_with_no_rows_yields_nothing() -> None:
    run = RunEpochs(blocks_of({0: 4, 2: 4}, 3), batch_size=2)
    assert len(list(run.epoch(0))) == 2
    assert list(run.epoch(1)) == []
    assert np.concatenate([b["id"] for b in run.epoch(2)]).tolist() == [4, 5, 6, 7]


def test_an_epochs_shard_order_depends_on_seed_and_epoch_only() -> None:
    from mm_ray.data.epochs import epoch_order

    urls = [f"s{i}.tar" for i in range(12)]
    orders = [epoch_order(urls, 7, e) for e in range(4)]
    assert all(sorted(o) == sorted(urls) for o in orders)
    assert len({tuple(o) for o in orders}) == 4, "every epoch another order"
    # Epoch 2 of a run that lists epochs 0-3 and of one resumed at epoch 2: the same order.
    assert epoch_order(list(urls), 7, 2) == orders[2]
    assert epoch_order(urls, 8, 2) != orders[2]
    assert epoch_order(urls, None, 3) == urls, "no seed: the order given"

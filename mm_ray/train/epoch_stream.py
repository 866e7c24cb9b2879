"""One stream for the whole run, cut into its epochs: what a Train worker reads when the shards are streamed
with one Ray Data execution per run (``train.one_execution``).

    run = RunEpochs(blocks, batch_size=64, shuffle_buffer=2048)   # blocks: the stream's numpy blocks, in order
    for epoch in range(first, epochs):
        for batch in run.epoch(epoch, seed=loop.shuffle_seed(epoch, rank)):   # numpy batches of that epoch only
            ...

Every row carries the epoch it belongs to (``EPOCH``, made by the decoding actors from the shard list, which
lists each epoch's shards in that epoch's seeded order: ``mm_ray.data.epochs.epoch_order``). The stream is
ordered (``preserve_order``), so its epochs follow one another: ``epoch(e)`` yields the rows of epoch ``e``
and stops at the first row of a later one, which it keeps for the next call (rows of an epoch the caller
left early are skipped). Epoch boundaries are exact: no
row of one epoch is trained in another, and the last batch of an epoch may be short, as with one execution
per epoch. The local shuffle buffer is drawn within an epoch only (a row of epoch e+1 never waits in it while
epoch e ends), gathering each batch from the buffered blocks without copying the buffer.

Pure Python and numpy: no Ray, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from mm_ray.data.epochs import EPOCH

__all__ = ["EPOCH", "EpochOrderError", "RunEpochs"]

Block = Mapping[str, np.ndarray]


class EpochOrderError(RuntimeError):
    """The stream delivered a row of an earlier epoch after a later one (it was not read in order)."""


class RunEpochs:
    """The run's blocks (numpy column dicts holding ``EPOCH``) as one batch iterator per epoch."""

    def __init__(self, blocks: Iterable[Block], *, batch_size: int, shuffle_buffer: int = 0) -> None:
        self._blocks = iter(blocks)
        self._batch_size = batch_size
        self._shuffle_buffer = shuffle_buffer
        self._held: dict[str, np.ndarray] | None = None
        """The rest of a block whose first row belongs to a later epoch than the one being read."""
        self._last_epoch = -1
        self._highest = -1
        """The latest epoch seen in the stream: no later row may belong to an earlier one."""

    def epoch(self, epoch: int, seed: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """The batches of epoch ``epoch`` (``batch_size`` rows, the last one short), through a local shuffle
        buffer of ``shuffle_buffer`` rows seeded by ``seed`` when the buffer is on."""
        chunks = self._chunks(epoch)
        if self._shuffle_buffer:
            return _shuffled(chunks, self._batch_size, self._shuffle_buffer, np.random.default_rng(seed))
        return _in_order(chunks, self._batch_size)

    def _chunks(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Runs of rows of ``epoch`` (without ``EPOCH``), in stream order."""
        if epoch < self._last_epoch:
            raise ValueError(f"epoch {epoch} was already read past (at epoch {self._last_epoch})")
        # The held rows (the head of a later epoch, or the rest of one left early) are looked at first.
        self._last_epoch = epoch
        while True:
            block = self._held if self._held is not None else self._next_block()
            self._held = None
            if block is None:
                return
            epochs = block[EPOCH]
            if len(epochs) == 0:
                continue
            if np.any(np.diff(epochs) < 0) or epochs[0] < self._highest:
                raise EpochOrderError(
                    f"a row of epoch {int(epochs.min())} came after one of epoch {self._highest}: the run's "
                    "stream must be read in order (DataContext.execution_options.preserve_order)"
                )
            self._highest = int(epochs[-1])
            # Rows of an epoch the caller left early are not trained in this one.
            begin = int(np.searchsorted(epochs, epoch, side="left"))
            end = int(np.searchsorted(epochs, epoch, side="right"))
            if end < len(epochs):
                self._held = {k: v[end:] for k, v in block.items()}
            if end > begin:
                yield {k: v[begin:end] for k, v in block.items() if k != EPOCH}
            if self._held is not None:
                return

    def _next_block(self) -> dict[str, np.ndarray] | None:
        block = next(self._blocks, None)
        return None if block is None else dict(block)


def _rows(chunk: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(chunk.values()))) if chunk else 0


def _in_order(chunks: Iterator[dict[str, np.ndarray]], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``batch_size`` rows in the chunks' order; the last one may be short."""
    pending: list[dict[str, np.ndarray]] = []
    count = 0
    for chunk in chunks:
        pending.append(chunk)
        count += _rows(chunk)
        while count >= batch_size:
            batch, pending = _take_front(pending, batch_size)
            count -= batch_size
            yield batch
    if count:
        yield _concat(pending)


def _take_front(
    chunks: list[dict[str, np.ndarray]], n: int
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    taken, rest, need = [], [], n
    for chunk in chunks:
        rows = _rows(chunk)
        if need >= rows:
            taken.append(chunk)
            need -= rows
        elif need > 0:
            taken.append({k: v[:need] for k, v in chunk.items()})
            rest.append({k: v[need:] for k, v in chunk.items()})
            need = 0
        else:
            rest.append(chunk)
    return _concat(taken), rest


def _concat(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(chunks) == 1:
        return chunks[0]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _shuffled(
    chunks: Iterator[dict[str, np.ndarray]], batch_size: int, buffer_rows: int, rng: np.random.Generator
) -> Iterator[dict[str, np.ndarray]]:
    """Batches drawn at random from a buffer of at least ``buffer_rows`` rows (fewer only at the epoch's end,
    as Ray's ``local_shuffle_buffer_size``): the buffer is a list of (chunk, row) places, a batch is gathered
    from the chunks it draws from, and a chunk is let go when its last row was drawn."""
    held: dict[int, dict[str, np.ndarray]] = {}
    left: dict[int, int] = {}
    places = np.zeros((0, 2), dtype=np.int64)
    for i, chunk in enumerate(chunks):
        n = _rows(chunk)
        held[i], left[i] = chunk, n
        places = np.concatenate([places, np.stack([np.full(n, i), np.arange(n)], axis=1)])
        while len(places) >= max(buffer_rows, batch_size):
            batch, places = _draw(held, left, places, batch_size, rng)
            yield batch
    while len(places):
        batch, places = _draw(held, left, places, min(batch_size, len(places)), rng)
        yield batch


def _draw(
    held: dict[int, dict[str, np.ndarray]],
    left: dict[int, int],
    places: np.ndarray,
    n: int,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    pick = rng.choice(len(places), size=n, replace=False)
    chosen = places[pick]
    parts = []
    for chunk_id in np.unique(chosen[:, 0]):
        rows = chosen[chosen[:, 0] == chunk_id, 1]
        chunk = held[int(chunk_id)]
        parts.append({k: v[rows] for k, v in chunk.items()})
        left[int(chunk_id)] -= len(rows)
        if not left[int(chunk_id)]:
            del held[int(chunk_id)], left[int(chunk_id)]
    batch = _concat(parts)
    # Gathered chunk by chunk: put the rows in a random order within the batch too.
    order = rng.permutation(n)
    return {k: v[order] for k, v in batch.items()}, np.delete(places, pick, axis=0)

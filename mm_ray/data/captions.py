"""Captions for tokenizer training, read straight from the shards (no image/audio decoding)."""

from __future__ import annotations

from collections.abc import Iterator

from mm_ray import columns as C
from mm_ray.data.members import MemberMap, assemble
from mm_ray.data.raw import RawSample
from mm_ray.data.tar_stream import iter_shard


def iter_captions(
    urls: list[str], members: MemberMap, storage_options: dict[str, str] | None = None, limit: int = 20000
) -> Iterator[str]:
    """Yield up to ``limit`` valid UTF-8 captions, shard by shard, skipping anything unreadable.

    Bad samples are not reported here: the ingest run that follows quarantines them properly.
    """
    count = 0
    for url in urls:
        for item in iter_shard(url, storage_options=storage_options):
            if not isinstance(item, RawSample):
                continue
            row, _ = assemble(item, members)
            text = row and row[C.TEXT_BYTES]
            if not text:
                continue
            try:
                yield text.decode("utf-8")
            except UnicodeDecodeError:
                continue
            count += 1
            if count >= limit:
                return

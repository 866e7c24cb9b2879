"""Captions for tokenizer training, read straight from the shards (no image/audio decoding), and the tokenizer
a run uses: ``obtain_tokenizer(cfg, shards)`` loads ``text.tokenizer`` or trains one on the captions."""

from __future__ import annotations

from collections.abc import Iterator

from mm_ray import columns as C
from mm_ray.config.schema import Config
from mm_ray.data.members import MemberMap, assemble, member_map
from mm_ray.data.raw import RawSample
from mm_ray.data.sources import expand_shards
from mm_ray.data.tar_stream import iter_shard
from mm_ray.preprocess.tokenizer import load_tokenizer, train_tokenizer


def obtain_tokenizer(cfg: Config, shard_specs: list[str]) -> str:
    """The tokenizer as a JSON string: loaded from ``text.tokenizer`` or trained on the shards' captions."""
    if cfg.text.tokenizer:
        return load_tokenizer(cfg.text.tokenizer).to_str()
    urls = expand_shards(shard_specs, storage_options=cfg.data.storage_options)
    captions = iter_captions(
        urls,
        member_map(cfg),
        cfg.data.storage_options,
        limit=cfg.text.tokenizer_train_samples,
        max_bytes=cfg.text.max_caption_bytes,
    )
    return train_tokenizer(captions, vocab_size=cfg.text.vocab_size).to_str()


def iter_captions(
    urls: list[str],
    members: MemberMap,
    storage_options: dict[str, str] | None = None,
    limit: int = 20000,
    max_bytes: int = 65536,
) -> Iterator[str]:
    """Yield up to ``limit`` valid UTF-8 captions of at most ``max_bytes``, shard by shard, skipping anything
    unreadable.

    Bad samples are not reported here: the ingest run that follows quarantines them properly.
    """
    count = 0
    for url in urls:
        for item in iter_shard(url, storage_options=storage_options, members=members):
            if not isinstance(item, RawSample):
                continue
            row, _ = assemble(item, members)
            text = row and row[C.TEXT_BYTES]
            if not text or len(text) > max_bytes:
                continue
            try:
                yield text.decode("utf-8")
            except UnicodeDecodeError:
                continue
            count += 1
            if count >= limit:
                return

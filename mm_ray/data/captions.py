"""Captions for tokenizer training, read straight from the shards (no image/audio decoding), and the tokenizer
a run uses: ``obtain_tokenizer(cfg, shards)`` loads ``text.tokenizer`` or trains one on the captions, unless the
text encoder comes from ``transformers``: then the text pool tokenizes with that model's own ``tokenizer.json``
(``model.encoders.text.path``), so the ids index the model's embedding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mm_ray.config.load import ConfigError
from mm_ray.config.schema import Config
from mm_ray.data.members import MemberMap, assemble, member_map
from mm_ray.data.raw import RawSample
from mm_ray.data.sources import expand_shards
from mm_ray.data.tar_stream import iter_shard
from mm_ray.modalities.registry import modalities_of
from mm_ray.modalities.text import TEXT
from mm_ray.preprocess.tokenizer import load_tokenizer, train_tokenizer


def obtain_tokenizer(cfg: Config, shard_specs: list[str]) -> str:
    """The tokenizer as a JSON string: the text encoder's own (``encoder_tokenizer``), else loaded from
    ``text.tokenizer`` or trained on the shards' captions."""
    own = encoder_tokenizer(cfg)
    if own is not None:
        if cfg.text.tokenizer and load_tokenizer(cfg.text.tokenizer).to_str() != own:
            raise ConfigError(
                f"text.tokenizer: {cfg.text.tokenizer} is not the tokenizer of the text encoder at "
                "model.encoders.text.path, which the text pool must use; leave text.tokenizer unset"
            )
        return own
    if cfg.text.tokenizer:
        return load_tokenizer(cfg.text.tokenizer).to_str()
    if TEXT.name not in modalities_of(cfg):
        # Nothing tokenizes: a tokenizer of the special tokens only, so caches and checkpoints keep one layout.
        return train_tokenizer([], vocab_size=cfg.text.vocab_size).to_str()
    urls = expand_shards(shard_specs, storage_options=cfg.data.storage_options)
    captions = iter_captions(
        urls,
        member_map(cfg),
        cfg.data.storage_options,
        limit=cfg.text.tokenizer_train_samples,
        max_bytes=cfg.text.max_caption_bytes,
    )
    return train_tokenizer(captions, vocab_size=cfg.text.vocab_size).to_str()


def encoder_tokenizer(cfg: Config) -> str | None:
    """The ``tokenizer.json`` (as JSON text) of a ``transformers`` text encoder's directory; None when the text
    encoder is not one. ``ConfigError`` naming ``model.encoders.text.path`` when it has none."""
    enc = cfg.model.encoders.text
    if enc.source != "transformers":
        return None
    if not enc.path:
        raise ConfigError(
            "model.encoders.text.path: the model directory (config.json, weights, tokenizer.json)"
        )
    path = Path(enc.path).expanduser() / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(
            f"model.encoders.text.path: no tokenizer.json in {enc.path} (the text pool needs it)"
        )
    return load_tokenizer(path).to_str()


def check_encoder_tokenizer(cfg: Config, tokenizer_json: str) -> None:
    """``ConfigError`` when training data was tokenized with another tokenizer than the text encoder's own."""
    own = encoder_tokenizer(cfg)
    if own is not None and own != tokenizer_json:
        where = f"train.cache: {cfg.train.cache}" if cfg.train.cache else "the training data"
        raise ConfigError(
            f"{where} was tokenized with another tokenizer than the text encoder's (model.encoders.text.path); "
            "preprocess it with the same model.encoders.text settings"
        )


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
            text = row and row.get(TEXT.raw_column)
            if not text or len(text) > max_bytes:
                continue
            try:
                yield text.decode("utf-8")
            except UnicodeDecodeError:
                continue
            count += 1
            if count >= limit:
                return

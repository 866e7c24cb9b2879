"""A cache's small files are written whole or not at all, and its manifest (data, not settings) cannot point
the tokenizer at a file outside the cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from cachekit import a_manifest

from mm_ray.data.cache import MANIFEST, Cache, CacheError, write_text
from mm_ray.data.manifest import TOKENIZER


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    fs, path = pafs.LocalFileSystem(), str(tmp_path / MANIFEST)
    write_text(fs, path, '{"samples_ok": 4}\n')
    inode = os.stat(path).st_ino
    with pytest.raises(UnicodeEncodeError):  # fails while writing (truncate-then-write left an empty file)
        write_text(fs, path, '{"samples_ok": 5, "bad": "\udc80"}\n')
    assert Path(path).read_text() == '{"samples_ok": 4}\n'
    write_text(fs, path, '{"samples_ok": 6}\n')
    assert Path(path).read_text() == '{"samples_ok": 6}\n'
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST]  # no temporary file left behind


@pytest.mark.parametrize("name", ["../outside.json", "/etc/hostname", "sub/tokenizer.json", "..", "", 7])
def test_a_manifest_cannot_point_the_tokenizer_outside_the_cache(tmp_path: Path, name) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (tmp_path / "outside.json").write_text('{"planted": true}')
    (cache / TOKENIZER).write_text('{"model": "ours"}')
    (cache / MANIFEST).write_text(json.dumps({**a_manifest().to_dict(), "tokenizer": name}))
    with pytest.raises(CacheError, match=f"tokenizer {name!r} is not a file name inside the cache"):
        _ = Cache.open(str(cache)).tokenizer_json
    (cache / MANIFEST).write_text(a_manifest(tokenizer=TOKENIZER).to_json())
    assert Cache.open(str(cache)).tokenizer_json == '{"model": "ours"}'

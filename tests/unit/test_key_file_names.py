"""A sample's key names one file inside the writer's folder, whatever the key (``mm_ray.data.keys``), and
``mm-ray generate``'s writer names its files that way: a hostile key neither escapes ``--out`` nor stops the run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from mm_ray.columns import KEY
from mm_ray.data.keys import MAX_STEM, key_file_name
from mm_ray.generation.run import _write_batch

HOSTILE = [
    "../../victim/pwned.txt",
    "../../../../../../etc/cron.d/x",
    "/etc/passwd",
    "a/b",
    "a_b",  # what a/b would become without the hash: the two must differ
    "..",
    ".",
    "",
    ".bashrc",
    "-rf",
    "x\x00y",
    "line\nbreak",
    "..\\..\\windows",
    "caf\udce9",  # a latin-1 byte in a tar header, as tarfile decodes it (surrogateescape)
    "café",
    "k" * 5000,
    "k" * 5000 + "x",  # long keys that differ only at the end
    "nested/dir/that/does/not/exist/0001",
]


def test_plain_keys_stay_as_they_are() -> None:
    assert key_file_name("000123", "_0.png") == "000123_0.png"
    assert key_file_name("sample-7.a_b", ".wav") == "sample-7.a_b.wav"


@pytest.mark.parametrize("key", HOSTILE, ids=range(len(HOSTILE)))
def test_any_key_is_one_safe_name_inside_the_folder(tmp_path: Path, key: str) -> None:
    name = key_file_name(key, "_0.png")
    # Checked against the file system itself, not against the function's own rule.
    assert os.sep not in name and "\\" not in name and "\x00" not in name and name not in (".", "..")
    assert not name.startswith((".", "-")) and name.endswith("_0.png")
    assert len(name.encode()) <= 255 and len(name) <= MAX_STEM + len("_0.png")
    target = tmp_path / "out" / name
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"x")  # creatable: no missing directory, no invalid encoding
    assert target.resolve().parent == (tmp_path / "out").resolve()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [name]


def test_distinct_keys_get_distinct_names() -> None:
    names = [key_file_name(key) for key in HOSTILE]
    assert len(set(names)) == len(HOSTILE)


def test_a_suffix_is_the_writers_own() -> None:
    with pytest.raises(ValueError, match="suffix"):
        key_file_name("k", "/../x")


def test_generate_writes_every_sample_of_hostile_keys_inside_its_folder(tmp_path: Path) -> None:
    out = tmp_path / "generated" / "image"
    out.mkdir(parents=True)
    keys = ["000001", "../../victim/pwned.txt", "missing/dir/k", "..", "/abs"]
    batch = {
        KEY: np.array(keys, dtype=object),
        "draw": np.zeros(len(keys), dtype=np.int64),
        "png": np.array([f"png{i}".encode() for i in range(len(keys))], dtype=object),
    }
    assert _write_batch(pafs.LocalFileSystem(), str(out), batch) == len(keys)
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == len(keys) and all(p.parent == out for p in written)
    assert (out / "000001_0.png").read_bytes() == b"png0"
    assert sorted(p.read_bytes() for p in written) == sorted(f"png{i}".encode() for i in range(len(keys)))

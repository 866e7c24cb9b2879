"""Shard specs -> shard URLs, and opening shards, on local disk and on a real (moto) S3 server."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from mm_ray.data.sources import ShardOpenError, expand_shards, filesystem_for, open_shard
from mm_ray.data.tar_stream import iter_shard
from mm_ray.quarantine import Reason


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "w:gz" if path.name.endswith(("gz", "tgz")) else "w"
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    """train-000..002.tar, train-003.tar.gz, val-000.tgz, a non-shard file, a nested shard, a directory."""
    root = tmp_path / "shards"
    for i in range(3):
        write_tar(root / f"train-{i:03d}.tar", {f"{i}.txt": b"hi"})
    write_tar(root / "train-003.tar.gz", {"3.txt": b"hi"})
    write_tar(root / "val-000.tgz", {"v.txt": b"hi"})
    (root / "README.md").write_text("not a shard")
    write_tar(root / "nested" / "train-999.tar", {"n.txt": b"hi"})
    (root / "train-005.tar").mkdir()  # a directory with a shard's name is not a shard
    return root


def names(urls: list[str]) -> list[str]:
    return [u.rsplit("/", 1)[-1] for u in urls]


def test_directory_lists_shards_directly_inside_sorted(shard_dir: Path):
    urls = expand_shards(str(shard_dir))
    assert names(urls) == [
        "train-000.tar",
        "train-001.tar",
        "train-002.tar",
        "train-003.tar.gz",
        "val-000.tgz",
    ]
    assert all(Path(u).is_absolute() and Path(u).is_file() for u in urls)


def test_glob_matches_within_one_directory_level(shard_dir: Path):
    assert names(expand_shards(str(shard_dir / "train-*.tar"))) == [
        "train-000.tar",
        "train-001.tar",
        "train-002.tar",
    ]
    assert names(expand_shards(str(shard_dir / "train-00[13].tar*"))) == ["train-001.tar", "train-003.tar.gz"]
    # ``*`` never crosses "/": the nested shard needs its own path segment in the pattern.
    assert names(expand_shards(str(shard_dir / "*" / "train-*.tar"))) == ["train-999.tar"]


def test_brace_range_is_expanded_without_checking_existence(shard_dir: Path):
    urls = expand_shards(str(shard_dir / "train-{000..004}.tar"))
    assert names(urls) == [f"train-{i:03d}.tar" for i in range(5)]  # 004 does not exist


def test_list_of_specs_is_deduplicated_and_sorted(shard_dir: Path):
    urls = expand_shards([str(shard_dir / "val-000.tgz"), str(shard_dir / "train-*.tar"), str(shard_dir)])
    assert urls == sorted(set(urls))
    assert names(urls) == [
        "train-000.tar",
        "train-001.tar",
        "train-002.tar",
        "train-003.tar.gz",
        "val-000.tgz",
    ]


def test_relative_specs_become_absolute(shard_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(shard_dir.parent)
    urls = expand_shards(["shards/train-000.tar", "shards/val-*.tgz", "shards/train-{001..002}.tar"])
    assert urls == [
        str(shard_dir / n) for n in ("train-000.tar", "train-001.tar", "train-002.tar", "val-000.tgz")
    ]


@pytest.mark.parametrize("spec", ["train-*.zip", "missing.tar", "nested/../empty"])
def test_spec_matching_nothing_is_an_error_naming_it(shard_dir: Path, spec: str):
    (shard_dir / "empty").mkdir()
    full = str(shard_dir / spec)
    with pytest.raises(ValueError, match="no shards match") as info:
        expand_shards([str(shard_dir / "train-000.tar"), full])
    assert repr(full) in str(info.value)


def test_unsupported_scheme_is_rejected():
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        expand_shards("gs://bucket/shard.tar")


def test_open_shard_returns_raw_bytes_and_names_missing_shards(shard_dir: Path):
    path = shard_dir / "train-003.tar.gz"
    with open_shard(str(path)) as stream:
        assert stream.read() == path.read_bytes()  # not transparently decompressed
    missing = str(shard_dir / "train-404.tar")
    with pytest.raises(ShardOpenError, match=re.escape(f"cannot open shard {missing!r}")):
        open_shard(missing)


def test_missing_brace_expanded_shard_surfaces_as_unreadable_by_name(shard_dir: Path):
    url = expand_shards(str(shard_dir / "train-{003..004}.tar"))[-1]
    records = list(iter_shard(url))
    assert [(r.shard, r.reason) for r in records] == [(url, Reason.UNREADABLE_SHARD)]
    assert "train-004.tar" in records[0].detail


# --- S3 (moto server on loopback) -------------------------------------------------------------


@pytest.fixture
def s3_shards(s3, shard_dir: Path, request: pytest.FixtureRequest) -> str:
    """The shard directory uploaded under a prefix unique to the test; returns ``s3://bucket/prefix/``."""
    return s3.upload_dir(shard_dir, prefix=request.node.name)


def test_s3_prefix_lists_shards_directly_under_it(s3, s3_shards: str):
    expected = [
        s3_shards + n for n in ("train-000.tar", "train-001.tar", "train-002.tar", "train-003.tar.gz")
    ]
    expected.append(s3_shards + "val-000.tgz")
    assert expand_shards(s3_shards, storage_options=s3.storage_options) == expected
    assert expand_shards(s3_shards.rstrip("/"), storage_options=s3.storage_options) == expected


def test_s3_glob_and_brace(s3, s3_shards: str):
    opts = s3.storage_options
    assert names(expand_shards(s3_shards + "train-*.tar", storage_options=opts)) == [
        "train-000.tar",
        "train-001.tar",
        "train-002.tar",
    ]
    assert names(expand_shards(s3_shards + "*/train-*.tar", storage_options=opts)) == ["train-999.tar"]
    braced = expand_shards(s3_shards + "train-{001..002}.tar", storage_options=opts)
    assert braced == [s3_shards + "train-001.tar", s3_shards + "train-002.tar"]


def test_s3_no_match_is_an_error_naming_the_spec(s3, s3_shards: str):
    with pytest.raises(ValueError, match=r"no shards match '.*/nothing-\*\.tar'"):
        expand_shards(s3_shards + "nothing-*.tar", storage_options=s3.storage_options)


def test_open_shard_on_s3_reads_the_same_bytes_as_the_local_file(s3, s3_shards: str, shard_dir: Path):
    for name in ("train-001.tar", "train-003.tar.gz"):
        with open_shard(s3_shards + name, s3.storage_options) as stream:
            assert stream.read() == (shard_dir / name).read_bytes()
    missing = s3_shards + "train-404.tar"
    with pytest.raises(ShardOpenError, match=re.escape(f"cannot open shard {missing!r}")):
        open_shard(missing, s3.storage_options)


def test_s3_credentials_may_come_from_the_environment(s3, s3_shards: str):
    # The fixture sets AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; options leave the keys out.
    opts = {k: v for k, v in s3.storage_options.items() if k not in ("access_key", "secret_key")}
    fs, path = filesystem_for(s3_shards + "val-000.tgz", opts)
    assert path == f"{s3.bucket}/{s3_shards.split('/', 3)[3]}val-000.tgz"
    assert fs.get_file_info(path).size > 0


def test_a_file_name_that_is_not_utf8_becomes_an_unreadable_shard_naming_it(tmp_path: Path) -> None:
    """A latin-1 byte in a shard's file name (pyarrow's listing raised UnicodeDecodeError for the whole run):
    listed with the byte escaped, opened as a named unreadable shard, the other shards read as usual."""
    root = tmp_path / "shards"
    write_tar(root / "ok.tar", {"k.txt": b"hi"})
    write_tar(root / "nested" / "deep.tar", {"d.txt": b"hi"})
    bad = root.as_posix().encode() + b"/caf\xe9.tar"
    with open(bad, "wb") as f:  # bytes path: the name cannot be spelled as text
        f.write(write_tar(tmp_path / "any.tar", {"x.txt": b"hi"}).read_bytes())
    escaped = f"{root}/caf\\xe9.tar"
    assert expand_shards(str(root)) == [escaped, f"{root}/ok.tar"]
    assert expand_shards(f"{root}/*.tar") == [escaped, f"{root}/ok.tar"]
    assert expand_shards(f"{root}/*/*.tar") == [f"{root}/nested/deep.tar"]
    [record] = list(iter_shard(escaped))
    assert record.reason == Reason.UNREADABLE_SHARD and record.shard == escaped
    assert "not valid UTF-8" in record.detail and "rename it" in record.detail
    assert [s.key for s in iter_shard(f"{root}/ok.tar")] == ["k"]

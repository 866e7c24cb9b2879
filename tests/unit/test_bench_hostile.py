"""``mm-ray bench hostile``'s shards: the hostile sample sits among all of a real shard's good samples."""

from __future__ import annotations

import tarfile

import pytest
from shardkit import good_sample, read_tar_samples, write_samples

from mm_ray.bench.hostile import write_case_shard


@pytest.mark.parametrize(
    ("case", "suffix"), [("bomb", ".tar.gz"), ("bomb_bz2", ".tar.bz2"), ("bomb_xz", ".tar.xz")]
)
def test_a_bomb_is_a_small_compressed_shard_whose_member_header_says_gigabytes(
    tmp_path, case, suffix
) -> None:
    good = write_samples(tmp_path / "good.tar", {f"g{i}": good_sample(i, label=i % 2) for i in range(6)})
    bomb = write_case_shard(case, good, tmp_path, gib=0.05)
    assert bomb.name == case + suffix
    assert bomb.stat().st_size < 2 << 20  # 50 MiB of zeros compress to a few hundred KB at most
    with tarfile.open(bomb, mode="r:*") as tar:  # tarfile's own reader, independent of mm_ray's
        sizes = {info.name: info.size for info in tar}
    assert sizes["hostile.jpg"] == int(0.05 * 2**30)
    # Every good member is there, unchanged, and no sample is split by the hostile one.
    samples = read_tar_samples(bomb)
    truth = read_tar_samples(good)
    assert {k: v for k, v in samples.items() if k != "hostile"} == truth
    keys = [name.split(".")[0] for name in sizes]
    assert keys == sorted(keys, key=keys.index) and len(set(keys)) == len(truth) + 1


def test_caption_cases_hold_the_caption_size_they_name(tmp_path) -> None:
    good = write_samples(tmp_path / "good.tar", {f"g{i}": good_sample(i, label=0) for i in range(2)})
    shard = write_case_shard("caption_under_member_cap", good, tmp_path)
    caption = read_tar_samples(shard)["hostile"]["txt"]
    assert abs(len(caption) - 60 * 2**20) < 5

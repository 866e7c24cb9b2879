"""A benchmark's child processes never get a credential in their command line (every user of the machine can
read a process's arguments): the overrides travel in a private spec file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from shardkit import good_sample, write_samples

from mm_ray.bench import measure
from mm_ray.bench.runner import bench_cache
from mm_ray.config.load import load_config

SECRET = "wJalrXUtnFEMI-planted-secret"


class _Stop(Exception):
    pass


def test_the_cache_child_gets_the_overrides_in_a_private_file_not_its_argv(
    tmp_path: Path, monkeypatch
) -> None:
    shard = write_samples(tmp_path / "shards" / "train-000000.tar", {"k0": good_sample(0)})
    overrides = [f"data.storage_options={{secret_key: {SECRET}, region: x}}", "image.size=32"]
    seen = {}

    def child(command, **kwargs):  # the process that would start: what it would be given
        seen["argv"] = command
        spec_path = Path(command[-1])
        if spec_path.is_file():
            seen.update(spec=json.loads(spec_path.read_text()), dir_mode=spec_path.parent.stat().st_mode)
        raise _Stop

    monkeypatch.setattr(measure.subprocess, "run", child)
    cfg = load_config(None, [f"output_dir={tmp_path / 'runs'}", *overrides])
    with pytest.raises(_Stop):
        bench_cache(cfg, None, overrides, [str(shard)], cores=1)
    assert not any(SECRET in word for word in seen["argv"])
    assert seen["spec"]["overrides"][:2] == overrides  # the child still gets them
    assert stat.S_IMODE(seen["dir_mode"]) & 0o077 == 0  # in a directory only this user can enter

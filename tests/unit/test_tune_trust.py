"""Resuming a sweep unpickles Tune's state: a local experiment someone else could write is refused."""

from __future__ import annotations

import os

import pytest

from mm_ray.config.load import ConfigError
from mm_ray.tune.sweep import TUNER_STATE, check_trusted_storage


def test_a_private_experiment_is_trusted(tmp_path) -> None:
    (tmp_path / TUNER_STATE).write_bytes(b"state")
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / TUNER_STATE, 0o644)
    check_trusted_storage(str(tmp_path))


@pytest.mark.parametrize("target", ["dir", "state"])
def test_group_or_world_writable_state_is_refused_naming_the_path(tmp_path, target) -> None:
    state = tmp_path / TUNER_STATE
    state.write_bytes(b"planted")
    os.chmod(tmp_path, 0o777 if target == "dir" else 0o755)
    os.chmod(state, 0o666 if target == "state" else 0o644)
    with pytest.raises(ConfigError, match="writable by other users") as err:
        check_trusted_storage(str(tmp_path))
    assert str(tmp_path) in str(err.value) and "chmod go-w" in str(err.value)


def test_remote_storage_is_left_to_its_bucket_policy() -> None:
    check_trusted_storage("s3://bucket/sweeps/exp")

"""Resuming a sweep unpickles Tune's state: every file of a local experiment someone else could write is refused
(``file://`` included), the directories above it too, and a saved ``sweep.yaml`` never chooses the cluster, the
storage options or code to import. No Ray: every refusal comes before Ray starts."""

from __future__ import annotations

import logging
import os
import pickle
import stat
from pathlib import Path

import pytest
import yaml

from mm_ray.cli.main import main
from mm_ray.config.load import ConfigError, as_dict, load_config, persistable
from mm_ray.tune.sweep import SWEEP_FILE, TUNER_STATE, check_trusted_storage, load_sweep
from mm_ray.tune.trust import local_path, writable_by_others

ME, MY_GROUP = os.getuid(), os.getgid()
OTHER = 54321  # a uid / gid that is not this user's
# Every file Ray Tune 2.60 unpickles on Tuner.restore (tuner.pkl; the trials' cloudpickled fields in the
# experiment state; the searcher's state; a trial's pickled error).
UNPICKLED = (TUNER_STATE, "experiment_state-2026-01-01.json", "searcher-state-2026-01-01.pkl",
             "trial_abc/error.pkl")  # fmt: skip


class Planted:
    """Unpickling it leaves a mark: what a hostile ``tuner.pkl`` would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def _experiment(root: Path) -> Path:
    for name in UNPICKLED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"state")
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return root


def test_a_private_experiment_is_trusted(tmp_path) -> None:
    check_trusted_storage(str(_experiment(tmp_path)))
    check_trusted_storage(f"file://{tmp_path}")


@pytest.mark.parametrize("name", ["", *UNPICKLED])
def test_any_file_tune_unpickles_writable_by_others_is_refused_naming_it(tmp_path, name) -> None:
    root = _experiment(tmp_path / "exp")
    os.chmod(root / name, 0o777 if (root / name).is_dir() else 0o666)
    for location in (str(root), f"file://{root}"):  # a file:// URI is the same local path
        with pytest.raises(ConfigError, match="writable by other users") as err:
            check_trusted_storage(location)
        assert f"{root / name}".rstrip("/") in str(err.value) and "chmod go-w" in str(err.value)


@pytest.mark.skipif(os.getuid() != 0, reason="making a file someone else's needs root")
def test_a_file_owned_by_someone_else_is_refused(tmp_path) -> None:
    root = _experiment(tmp_path / "exp")
    os.chown(root / "searcher-state-2026-01-01.pkl", OTHER, -1)
    with pytest.raises(ConfigError, match=r"searcher-state-2026-01-01\.pkl.*owner uid 54321"):
        check_trusted_storage(str(root))


def test_writable_by_a_foreign_group_is_writable_by_others_and_by_ones_own_group_is_not() -> None:
    # Expected values from the rule itself, not the code: only this user may write or replace the file.
    assert writable_by_others(0o775, ME, OTHER, my_uid=ME, my_gid=MY_GROUP)  # another group may write
    assert not writable_by_others(
        0o775, ME, MY_GROUP, my_uid=ME, my_gid=MY_GROUP
    )  # per-user group, umask 002
    assert not writable_by_others(0o755, ME, OTHER, my_uid=ME, my_gid=MY_GROUP)  # another group may only read
    assert writable_by_others(0o757, ME, MY_GROUP, my_uid=ME, my_gid=MY_GROUP)  # world write
    assert writable_by_others(0o700, OTHER, MY_GROUP, my_uid=ME, my_gid=MY_GROUP)  # someone else's


def test_a_directory_of_the_experiment_writable_by_another_group_is_refused(tmp_path) -> None:
    others = [g for g in os.getgroups() if g != MY_GROUP] or ([OTHER] if os.getuid() == 0 else [])
    if not others:
        pytest.skip("this user belongs to no other group to give the directory to")
    root = _experiment(tmp_path / "exp")
    os.chown(root / "trial_abc", -1, others[0])
    os.chmod(root / "trial_abc", 0o775)
    with pytest.raises(ConfigError, match="trial_abc is writable by other users"):
        check_trusted_storage(str(root))


def test_a_directory_above_that_others_can_write_is_refused_unless_sticky(tmp_path) -> None:
    shared = tmp_path / "shared"
    root = _experiment(shared / "exp")
    os.chmod(shared, 0o777)  # anyone could move exp away and put theirs in its place
    with pytest.raises(ConfigError, match="a directory above it can be changed by others"):
        check_trusted_storage(str(root))
    os.chmod(shared, 0o777 | stat.S_ISVTX)  # /tmp's mode: others may not rename what is ours
    check_trusted_storage(str(root))


def test_a_link_to_a_file_others_can_write_is_refused(tmp_path) -> None:
    root = _experiment(tmp_path / "exp")
    outside = tmp_path / "outside.pkl"
    outside.write_bytes(b"planted")
    os.chmod(outside, 0o666)
    (root / "searcher-state-2026-01-01.pkl").unlink()
    (root / "searcher-state-2026-01-01.pkl").symlink_to(outside)
    with pytest.raises(ConfigError, match=r"searcher-state-2026-01-01\.pkl is writable by other users"):
        check_trusted_storage(str(root))


def test_remote_storage_warns_that_the_bucket_is_the_trust_boundary(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="mm_ray.tune.trust"):
        check_trusted_storage("s3://bucket/sweeps/exp")
    assert (
        "s3://bucket/sweeps/exp" in caplog.text
        and "the bucket's write policy is the trust boundary" in caplog.text
    )


def test_file_uris_are_local_paths() -> None:
    assert local_path("file:///runs/a%20b") == Path("/runs/a b") and local_path("runs/x") == Path("runs/x")
    assert local_path("s3://b/x") is None and local_path("gs://b/x") is None
    with pytest.raises(ConfigError, match="another host"):
        local_path("file://evil.example/runs")


def _saved_sweep(results: Path, *overrides: str) -> Path:
    cfg = load_config(None, [f"output_dir={results.parent}", f"name={results.name}", *overrides])
    results.mkdir(parents=True, exist_ok=True)
    space = {"model.preset": {"choice": ["gated", "film"]}}
    (results / SWEEP_FILE).write_text(yaml.safe_dump({"config": persistable(as_dict(cfg)), "space": space}))
    return results


def test_a_saved_sweep_never_chooses_the_cluster_nor_the_storage_endpoint(tmp_path) -> None:
    results = _saved_sweep(
        tmp_path / "runs" / "s",
        "ray.address=ray://attacker.example:10001",
        "data.storage_options={endpoint_override: attacker.example:9000, region: x}",
    )
    sweep = load_sweep(results)
    assert sweep.cfg.ray.address is None and sweep.cfg.data.storage_options == {}
    mine = load_config(None, ["ray.address=auto", "data.storage_options={endpoint_override: mine:9000}"])
    sweep = load_sweep(results, ray=mine.ray, storage_options=mine.data.storage_options)
    assert sweep.cfg.ray.address == "auto"
    assert sweep.cfg.data.storage_options == {"endpoint_override": "mine:9000"}
    assert sweep.cfg.model.preset == load_config(None).model.preset  # the rest is the saved config


def test_a_builder_named_by_a_saved_sweep_needs_the_callers_word(tmp_path) -> None:
    results = _saved_sweep(tmp_path / "runs" / "s", "model.builder=planted_module:make")
    with pytest.raises(ConfigError, match=r"names model.builder planted_module:make.*pass model.builder="):
        load_sweep(results)
    assert load_sweep(results, builders=["planted_module:make"]).cfg.model.builder == "planted_module:make"


def test_a_saved_sweep_others_can_write_is_refused(tmp_path) -> None:
    results = _saved_sweep(tmp_path / "runs" / "s")
    os.chmod(results / SWEEP_FILE, 0o666)
    with pytest.raises(ConfigError, match=f"{SWEEP_FILE} is writable by other users"):
        load_sweep(results)


def test_resume_refuses_a_planted_tuner_state_before_unpickling_it(tmp_path, capsys) -> None:
    """``mm-ray tune --resume`` on a sweep whose saved storage path is a ``file://`` URI of a directory anyone
    could write: refused naming it, Ray never started, the planted pickle never loaded."""
    marker, planted = tmp_path / "unpickled", tmp_path / "planted"
    planted.mkdir()
    (planted / "s").mkdir()
    (planted / "s" / TUNER_STATE).write_bytes(pickle.dumps(Planted(marker)))
    os.chmod(planted / "s", 0o777)
    results = _saved_sweep(tmp_path / "runs" / "s", f"tune.storage_path=file://{planted}")
    assert main(["tune", "--resume", str(results)]) == 2
    err = capsys.readouterr().err
    assert f"{planted / 's'} is writable by other users" in err and not marker.exists()


def test_a_bare_name_is_looked_up_under_output_dir_never_in_the_working_directory(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    _saved_sweep(tmp_path / "s")  # ./s/sweep.yaml, which someone's archive could have put here
    assert main(["tune", "--resume", "s", f"output_dir={tmp_path / 'runs'}"]) == 2
    assert f"{tmp_path / 'runs' / 's' / SWEEP_FILE} not found" in capsys.readouterr().err


def test_the_demos_own_resume_checks_the_experiment_too(tmp_path) -> None:
    """``mm-ray demo`` continues its sweep by itself (``continue_experiment`` with its own plan, no saved file
    read): a planted, world-writable experiment there is refused before Ray starts or anything is unpickled."""
    from mm_ray.tune.space import parse_space
    from mm_ray.tune.sweep import Sweep, continue_experiment

    marker, experiment = tmp_path / "unpickled", tmp_path / "run" / "sweep"
    experiment.mkdir(parents=True)
    (experiment / TUNER_STATE).write_bytes(pickle.dumps(Planted(marker)))
    os.chmod(experiment / TUNER_STATE, 0o666)
    plan = Sweep(load_config(None, [f"output_dir={tmp_path / 'run'}", "name=sweep"]),
                 parse_space({"model.preset": {"grid": ["film", "additive"]}}))  # fmt: skip
    with pytest.raises(ConfigError, match=f"{experiment / TUNER_STATE} is writable by other users"):
        continue_experiment(plan)
    assert not marker.exists()

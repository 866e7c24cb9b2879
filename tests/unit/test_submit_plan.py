"""What ``mm-ray submit`` checks and sends before any cluster is involved (``mm_ray.cluster.submit``)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from mm_ray.cluster.submit import SubmitError, named_files, plan_job

ROOT = Path(__file__).parents[2]


def test_a_valid_command_becomes_a_python_entrypoint_with_the_checkout_as_working_dir() -> None:
    argv = ["--", "tune", "--config", "pipelines/tune_small.yaml", "tune.num_samples=4"]
    job = plan_job(argv, project_root=ROOT)
    assert shlex.split(job.entrypoint) == ["python", "-m", "mm_ray.cli.main", *argv[1:]]
    assert job.runtime_env["working_dir"] == str(ROOT)
    # Never uploaded: VCS, environments, outputs, data (Ray caps an upload at 100 MiB).
    assert {".git/", ".venv/", "/runs/", "/data/", "*.tar"} <= set(job.runtime_env["excludes"])
    # A job's stdout is streamed by `mm-ray jobs logs --follow`: unbuffered, or nothing shows for minutes.
    assert job.runtime_env["env_vars"]["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no command to submit"),
        (["--"], "no command to submit"),
        (["trian"], "not a valid mm-ray command: mm-ray trian: "),
        (["train", "--epochs", "3"], "error: unrecognized arguments: --epochs"),
        (["submit", "--", "demo"], "`submit` runs on your machine"),
        (["train", "--config", "pipelines/nope.yaml"], "--config pipelines/nope.yaml: no such file"),
        (["tune", "--config", "/etc/hostname"], "--config /etc/hostname: outside the project directory"),
        (
            ["tune", "--config", "pipelines/tune_small.yaml", "tune.space=runs/x.yaml"],
            "tune.space runs/x.yaml",
        ),
        (["train", "--config", "pipelines/demo.yaml", "train.nope=1"], "config error: "),
        (["train", "train.epochs=many"], "config error: "),
    ],
)
def test_mistakes_fail_before_submission_naming_the_argument(argv: list[str], message: str) -> None:
    with pytest.raises(SubmitError) as err:
        plan_job(argv, project_root=ROOT)
    assert message in str(err.value)


def test_an_excluded_file_would_not_be_uploaded(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "best_config.yaml").write_text("name: x\n")
    with pytest.raises(SubmitError, match="excluded from the upload"):
        plan_job(["train", "--config", "runs/best_config.yaml"], project_root=tmp_path)


def test_named_files_finds_every_file_argument() -> None:
    from mm_ray.cli.main import parse_args

    args = parse_args(["tune", "--config", "a.yaml", "--space=b.yaml", "tune.space=c.yaml", "train.lr=0.1"])
    assert named_files(args) == [("--config", "a.yaml"), ("--space", "b.yaml"), ("tune.space", "c.yaml")]


def test_the_space_a_config_names_must_travel_too(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text("tune:\n  space: spaces/missing.yaml\n")
    with pytest.raises(SubmitError, match=r"tune.space \(set in --config sweep.yaml\) spaces/missing.yaml"):
        plan_job(["tune", "--config", "sweep.yaml"], project_root=tmp_path)


def test_the_package_and_pipelines_are_uploaded_data_and_outputs_are_not() -> None:
    from mm_ray.cluster.submit import is_excluded

    # Anchored patterns: the top-level data/ and runs/ stay home, the mm_ray.data package travels.
    assert not is_excluded(Path("mm_ray/data/pipeline.py"))
    assert not is_excluded(Path("pipelines/tune_small.yaml"))
    for path in ("data/train-000.tar", "runs/demo/summary.json", ".venv/bin/python", "x/__pycache__/a.pyc"):
        assert is_excluded(Path(path)), path
    every_source = [
        p.relative_to(ROOT) for p in (ROOT / "mm_ray").rglob("*.py") if "__pycache__" not in p.parts
    ]
    assert every_source and not any(is_excluded(p) for p in every_source)

"""What ``mm-ray submit`` checks and sends before any cluster is involved (``mm_ray.cluster.submit``)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from mm_ray.cli.main import main
from mm_ray.cluster.submit import SubmitError, named_files, plan_job, stage

ROOT = Path(__file__).parents[2]


def test_a_valid_command_becomes_a_python_entrypoint_with_the_package_and_pipelines() -> None:
    argv = ["--", "tune", "--config", "pipelines/tune_small.yaml", "tune.num_samples=4"]
    job = plan_job(argv, project_root=ROOT)
    assert shlex.split(job.entrypoint) == ["python", "-m", "mm_ray.cli.main", *argv[1:]]
    assert {
        "mm_ray/cli/main.py",
        "mm_ray/data/pipeline.py",
        "pipelines/tune_small.yaml",
        "pyproject.toml",
    } <= set(job.files)
    # The space the config names travels too.
    assert "pipelines/spaces/fusion_small.yaml" in job.files
    # A job's stdout is streamed by `mm-ray jobs logs --follow`: unbuffered, or nothing shows for minutes.
    assert job.runtime_env("/staged")["env_vars"]["PYTHONUNBUFFERED"] == "1"
    assert job.runtime_env("/staged")["working_dir"] == "/staged"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no command to submit"),
        (["--"], "no command to submit"),
        (["submit", "--", "demo"], "`submit` runs on your machine"),
        (["train", "--config", "pipelines/nope.yaml"], "--config pipelines/nope.yaml: no such file"),
        (["tune", "--config", "/etc/hostname"], "--config /etc/hostname: outside the project directory"),
        (
            ["tune", "--config", "pipelines/tune_small.yaml", "tune.space=runs/x.yaml"],
            "tune.space runs/x.yaml",
        ),
        (["train", "--config", "pipelines/demo.yaml", "train.nope=1"], "config error: "),
        (["train", "train.epochs=many"], "config error: "),
        (["train", "model.preset=gatd"], "config error: model.preset"),
    ],
)
def test_mistakes_fail_before_submission_naming_the_argument(argv: list[str], message: str) -> None:
    with pytest.raises(SubmitError) as err:
        plan_job(argv, project_root=ROOT)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trian"], "not a valid mm-ray command: mm-ray trian: "),
        (["train", "--epochs", "3"], "error: unrecognized arguments: --epochs"),
    ],
)
def test_the_cli_parses_the_command_as_mm_ray_would_before_sending(argv, message, capsys) -> None:
    assert main(["submit", "--address", "http://127.0.0.1:1", "--", *argv]) == 2
    assert message in capsys.readouterr().err


def test_named_files_finds_every_file_argument() -> None:
    argv = ["tune", "--config", "a.yaml", "--space=b.yaml", "tune.space=c.yaml", "train.lr=0.1"]
    assert named_files(argv) == [("--config", "a.yaml"), ("--space", "b.yaml"), ("tune.space", "c.yaml")]
    assert named_files(["train", "-c", "x.yaml"]) == [("--config", "x.yaml")]


def test_the_space_a_config_names_must_travel_too(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text("tune:\n  space: spaces/missing.yaml\n")
    with pytest.raises(SubmitError, match=r"tune.space \(set in --config sweep.yaml\) spaces/missing.yaml"):
        plan_job(["tune", "--config", "sweep.yaml"], project_root=tmp_path)


def _project(root: Path) -> None:
    """A checkout with the usual things lying around that must never leave the machine."""
    files = {
        "mm_ray/__init__.py": "",
        "mm_ray/data/pipeline.py": "x = 1\n",
        "mm_ray/data/__pycache__/pipeline.cpython-311.pyc": "compiled",
        "pipelines/demo.yaml": "name: demo\n",
        "pyproject.toml": "[project]\n",
        "README.md": "# x\n",
        "configs/mine.yaml": "name: mine\n",
        "extra/notes.txt": "notes\n",
        ".env": "AWS_SECRET_ACCESS_KEY=abc\n",
        "id_rsa": "PRIVATE KEY\n",
        "mm_ray/secrets.pem": "PEM\n",
        ".aws/credentials": "[default]\n",
        ".ray/auth_token": "token\n",
        "data/train-000.tar": "tar",
        "runs/demo/summary.json": "{}",
        "features.npy": "npy",
        "pipelines/backup.tar.gz": "gz",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_only_the_allow_list_and_the_named_files_travel(tmp_path: Path) -> None:
    _project(tmp_path)
    job = plan_job(["train", "--config", "configs/mine.yaml"], project_root=tmp_path, include=["extra"])
    assert sorted(job.files) == [
        "README.md",
        "configs/mine.yaml",
        "extra/notes.txt",
        "mm_ray/__init__.py",
        "mm_ray/data/pipeline.py",
        "pipelines/demo.yaml",
        "pyproject.toml",
    ]
    staged = stage(job, tmp_path, tmp_path.parent / "staged")
    copied = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert copied == sorted(job.files)
    assert (staged / "configs/mine.yaml").read_text() == "name: mine\n"


def test_include_must_stay_inside_the_project(tmp_path: Path) -> None:
    _project(tmp_path)
    with pytest.raises(SubmitError, match=r"--include \.\./elsewhere"):
        plan_job(["demo"], project_root=tmp_path, include=["../elsewhere"])


def test_every_package_source_travels_from_this_checkout() -> None:
    job = plan_job(["demo"], project_root=ROOT)
    every_source = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "mm_ray").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert every_source and every_source <= set(job.files)
    assert not [f for f in job.files if f.startswith(("tests/", ".git/", ".venv/", "runs/", "data/"))]

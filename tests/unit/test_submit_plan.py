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


def test_include_of_an_existing_path_outside_the_project_is_refused(tmp_path: Path) -> None:
    project, outside = tmp_path / "project", tmp_path / "outside.txt"
    _project(project)
    outside.write_text("someone's notes\n")  # it exists: only the inside-the-project rule can refuse it
    for path in ("../outside.txt", str(outside)):
        with pytest.raises(SubmitError, match="not a file or directory inside the project directory"):
            plan_job(["demo"], project_root=project, include=[path])


def test_links_are_never_followed_out_of_the_allow_listed_tree(tmp_path: Path) -> None:
    """A link in the package (``mm_ray/creds.py -> ~/.aws/credentials``), a linked ``pipelines/``, a linked
    directory inside it, a named config and an ``--include`` that are links: none travels, nor what it points at."""
    project, home = tmp_path / "project", tmp_path / "home"
    _project(project)
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("aws_secret_access_key = planted\n")
    (home / "team_pipelines" / "nested").mkdir(parents=True)
    (home / "team_pipelines" / "theirs.yaml").write_text("name: theirs\n")
    (home / "team_pipelines" / "nested" / "deep.yaml").write_text("name: deep\n")
    (project / "mm_ray" / "creds.py").symlink_to(home / ".aws" / "credentials")
    (project / "mm_ray" / "inner.py").symlink_to(project / "mm_ray" / "data" / "pipeline.py")  # inside, still
    (project / "pipelines" / "linked").symlink_to(home / "team_pipelines", target_is_directory=True)
    (project / "extra" / "away").symlink_to(home / ".aws", target_is_directory=True)
    job = plan_job(["train"], project_root=project, include=["extra"])
    assert not [
        f
        for f in job.files
        if f.startswith(("mm_ray/creds", "mm_ray/inner", "pipelines/linked", "extra/away"))
    ]
    staged = stage(job, project, tmp_path / "staged")
    assert not any("planted" in p.read_text() for p in staged.rglob("*") if p.is_file())

    # A whole linked pipelines/: none of it travels (the package still does).
    other = tmp_path / "other"
    _project(other)
    for path in sorted((other / "pipelines").iterdir()):
        path.unlink()
    (other / "pipelines").rmdir()
    (other / "pipelines").symlink_to(home / "team_pipelines", target_is_directory=True)
    job = plan_job(["train"], project_root=other)
    assert "mm_ray/__init__.py" in job.files and not [f for f in job.files if f.startswith("pipelines/")]

    # Named outright: refused, naming the argument.
    (project / "configs" / "link.yaml").symlink_to(project / "configs" / "mine.yaml")
    with pytest.raises(SubmitError, match=r"--config configs/link\.yaml: a symbolic link"):
        plan_job(["train", "--config", "configs/link.yaml"], project_root=project)
    (project / "cfglink").symlink_to(project / "configs", target_is_directory=True)
    with pytest.raises(SubmitError, match=r"--config cfglink/mine\.yaml: a symbolic link, or under one"):
        plan_job(["train", "--config", "cfglink/mine.yaml"], project_root=project)
    with pytest.raises(SubmitError, match="--include extra/away: not a file or directory inside the project"):
        plan_job(["train"], project_root=project, include=["extra/away"])
    with pytest.raises(SubmitError, match=r"--include cfglink: a symbolic link"):
        plan_job(["train"], project_root=project, include=["cfglink"])

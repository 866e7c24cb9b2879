"""What ``mm-ray submit`` / ``mm-ray jobs`` send to a cluster, read on the wire.

The cluster is ``tests/job_api_server.py``: a real HTTP server on loopback that answers like Ray's job API
and records each request (method, path, headers, JSON body). The client is Ray's own
``JobSubmissionClient``, driven by the ``mm-ray`` command line; nothing of it is replaced.
"""

from __future__ import annotations

import io
import json
import shlex
import zipfile
from pathlib import Path

import pytest
from job_api_server import JOB_ID, JobApiServer

from mm_ray.cli.main import main

TOKEN = "s3cr3t-t0ken-4f9a"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout to submit from (with a secret lying in it), and the cluster's token in a file outside it."""
    root = tmp_path / "checkout"
    files = {
        "mm_ray/__init__.py": "",
        "mm_ray/cli/main.py": "x = 1\n",
        "pipelines/demo.yaml": "name: demo\n",
        "pyproject.toml": "[project]\n",
        "README.md": "# x\n",
        ".env": "AWS_SECRET_ACCESS_KEY=abc\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "token").write_text(TOKEN + "\n")
    monkeypatch.chdir(root)
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return root


def cli(api: JobApiServer, project: Path, *argv: str) -> int:
    return main(
        [*argv[:1], "--address", api.address, "--token-file", str(project.parent / "token"), *argv[1:]]
    )


def the_submission(api: JobApiServer) -> dict:
    [submit] = [r for r in api.requests if r.method == "POST" and r.path == "/api/jobs/"]
    return submit.body


def assert_every_request_carries_the_token(api: JobApiServer) -> None:
    assert api.requests
    for request in api.requests:
        assert request.headers.get("Authorization") == f"Bearer {TOKEN}", (request.method, request.path)


def assert_the_token_is_never_shown(capsys, *files: Path) -> None:
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    for path in files:
        assert TOKEN not in path.read_text()


def test_the_request_has_the_driver_resources_the_merged_runtime_env_and_the_token(project, capsys) -> None:
    mine = {
        "env_vars": {"HF_HOME": "/mnt/hf"},
        "config": {"setup_timeout_seconds": 900},
        "working_dir": "s3://bucket/other-code.zip",  # replaced by the project's upload, with a warning
    }
    with JobApiServer(token=TOKEN) as api:
        code = cli(
            api,
            project,
            "submit",
            "--no-wait",
            "--entrypoint-num-cpus=0.5",
            "--entrypoint-num-gpus=1",
            "--entrypoint-memory=2000000000",
            '--entrypoint-resources={"preprocess": 1}',
            f"--runtime-env-json={json.dumps(mine)}",
            "--json=result.json",
            "--",
            "demo",
            "demo.sweep_presets=[]",
        )
    assert code == 0
    body = the_submission(api)
    assert shlex.split(body["entrypoint"]) == [
        "python",
        "-m",
        "mm_ray.cli.main",
        "demo",
        "demo.sweep_presets=[]",
    ]
    assert body["entrypoint_num_cpus"] == 0.5
    assert body["entrypoint_num_gpus"] == 1.0
    assert body["entrypoint_memory"] == 2_000_000_000
    assert body["entrypoint_resources"] == {"preprocess": 1}
    env = body["runtime_env"]
    [upload] = [r for r in api.requests if r.method == "PUT"]
    assert env["working_dir"] == "gcs://" + upload.path.rsplit("/", 1)[1]  # the package this client uploaded
    assert env["env_vars"] == {"HF_HOME": "/mnt/hf", "PYTHONUNBUFFERED": "1"}
    assert env["config"]["setup_timeout_seconds"] == 900
    # What travelled: the allow-list, not the secret lying in the checkout.
    names = zipfile.ZipFile(io.BytesIO(upload.body)).namelist()
    assert "mm_ray/cli/main.py" in names and "pipelines/demo.yaml" in names and ".env" not in names
    assert_every_request_carries_the_token(api)
    # --no-wait: the job is neither followed nor polled.
    assert not [r for r in api.requests if r.path.startswith(f"/api/jobs/{JOB_ID}")]
    out, err = capsys.readouterr()
    assert f"submitted {JOB_ID}" in out and "working_dir 's3://bucket/other-code.zip' replaced" in err
    assert TOKEN not in out + err + (project / "result.json").read_text()


def test_a_runtime_env_file_is_read_as_yaml(project, capsys) -> None:
    (project / "env.yaml").write_text("env_vars:\n  OMP_NUM_THREADS: '4'\n")
    with JobApiServer(token=TOKEN) as api:
        assert cli(api, project, "submit", "--no-wait", "--runtime-env", "env.yaml", "--", "demo") == 0
    assert the_submission(api)["runtime_env"]["env_vars"] == {"OMP_NUM_THREADS": "4", "PYTHONUNBUFFERED": "1"}
    assert "entrypoint_num_gpus" not in the_submission(api)  # unset flags are not sent
    assert_the_token_is_never_shown(capsys)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ('{"env_vars": {"PYTHONUNBUFFERED": "0"}}', "runtime env key 'env_vars.PYTHONUNBUFFERED'"),
        ('{"env_vars": {"N": 4}}', "runtime env: runtime_env['env_vars'] must be of type Dict[str, str]"),
        ('{"py_modules": ["../elsewhere"]}', "runtime env key 'py_modules': '../elsewhere' is local"),
        ('["pip"]', "--runtime-env-json: a runtime env is a mapping (got list)"),
        ("{pip", "--runtime-env-json: not JSON"),
    ],
)
def test_a_runtime_env_that_cannot_be_merged_fails_naming_the_key_before_any_request(
    project, capsys, flag: str, message: str
) -> None:
    with JobApiServer(token=TOKEN) as api:
        assert cli(api, project, "submit", "--runtime-env-json", flag, "--", "demo") == 2
    assert message in capsys.readouterr().err
    assert api.requests == []


def test_submit_waits_by_default_streams_the_logs_and_fails_with_the_job(project, capsys) -> None:
    logs = ["epoch 1 loss 0.9\n", "epoch 2 loss 0.7\n", "Traceback: boom\n"]
    failed = "Job entrypoint command failed with exit code 1"
    with JobApiServer(token=TOKEN, statuses=["FAILED"], logs=logs, message=failed) as api:
        assert cli(api, project, "submit", "--json=result.json", "--", "demo") == 1
    out = capsys.readouterr().out
    assert "".join(logs) in out and out.count("epoch 1") == 1  # each line once, in order
    assert f"job {JOB_ID}: FAILED" in out and failed in out
    assert json.loads((project / "result.json").read_text())["status"] == "FAILED"
    assert any(r.path == f"/api/jobs/{JOB_ID}/logs/tail" for r in api.requests)
    assert_every_request_carries_the_token(api)  # the websocket handshake included


def test_without_a_websocket_the_job_is_polled_until_it_ends(project, capsys) -> None:
    logs = ["starting\n", "epoch 1\n", "done\n"]
    with JobApiServer(token=TOKEN, statuses=["RUNNING", "SUCCEEDED"], logs=logs, websocket=False) as api:
        assert cli(api, project, "submit", "--", "demo") == 0
    out, err = capsys.readouterr()
    assert "".join(logs) in out and out.count("starting") == 1 and f"job {JOB_ID}: SUCCEEDED" in out
    assert "the log stream of raysubmit_test broke" in err
    assert_every_request_carries_the_token(api)


def test_jobs_delete_sends_a_delete_and_reports_rays_refusal(project, capsys) -> None:
    with JobApiServer(token=TOKEN, statuses=["STOPPED"]) as api:
        assert cli(api, project, "jobs", "delete", JOB_ID) == 0
    assert [r.method for r in api.requests if r.path == f"/api/jobs/{JOB_ID}"] == ["DELETE"]
    assert_every_request_carries_the_token(api)
    assert f"{JOB_ID}: deleted" in capsys.readouterr().out
    with JobApiServer(token=TOKEN, statuses=["RUNNING"]) as api:
        assert cli(api, project, "jobs", "delete", JOB_ID) == 2
    assert "non-terminal state" in capsys.readouterr().err


def test_a_wrong_token_is_refused_and_not_shown(project, capsys) -> None:
    with JobApiServer(token="the-clusters-own") as api:
        assert cli(api, project, "submit", "--no-wait", "--", "demo") == 2
    err = capsys.readouterr().err
    assert "refused the request" in err and TOKEN not in err

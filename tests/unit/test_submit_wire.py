"""What ``mm-ray submit`` / ``mm-ray jobs`` put on the wire, seen by a recording dashboard on loopback:
the auth header, and no storage credential in the entrypoint, the request body or the uploaded files."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from dashboard_stub import RecordingDashboard

from mm_ray.cli.main import main
from mm_ray.cluster.submit import job_client

SECRET = "wJalrXUtnFEMI-planted-secret"
SESSION = "FwoGZXIvYXdzEPlanted-session-token"


def test_the_job_client_sends_the_token_from_the_token_file(tmp_path: Path, monkeypatch) -> None:
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "token").write_text("t0ken-from-file\n")
    with RecordingDashboard() as dash:
        job_client(dash.address, token_file=str(tmp_path / "token"))
        monkeypatch.setenv("RAY_AUTH_TOKEN", "t0ken-from-env")
        job_client(dash.address)  # no flag: the environment's token
    sent = [r.headers.get("Authorization") for r in dash.requests]
    # Each client checks the version on connecting (Ray's client asks more than once): every request counts.
    first, second = sent[: len(sent) // 2], sent[len(sent) // 2 :]
    assert first and set(first) == {"Bearer t0ken-from-file"}
    assert set(second) == {"Bearer t0ken-from-env"}


def _project(root: Path) -> None:
    (root / "mm_ray").mkdir(parents=True)
    (root / "mm_ray" / "__init__.py").write_text("")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "s3.yaml").write_text(
        "# reads from object storage\n"
        "name: s3run\n"
        "data:\n"
        "  shards: [s3://bucket/train/]\n"
        "  storage_options:\n"
        "    endpoint_override: minio.internal:9000\n"
        f"    access_key: AKIDPLANTED\n    secret_key: {SECRET}\n    session_token: {SESSION}\n"
    )


def test_submit_sends_no_storage_credential(tmp_path: Path, monkeypatch, capsys) -> None:
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    options = json.dumps({"scheme": "http", "aws_secret_access_key": SECRET, "session_token": SESSION})
    command = [
        "train",
        "--config",
        "pipelines/s3.yaml",
        f"data.storage_options.secret_key={SECRET}",
        f"data.storage_options={options}",
        "train.epochs=1",
    ]
    with RecordingDashboard() as dash:
        assert main(["submit", "--no-wait", "--address", dash.address, "--", *command]) == 0
    out = capsys.readouterr()
    assert SECRET not in out.out and SESSION not in out.out
    assert "data.storage_options.secret_key (command line)" in out.err  # the user is told what stayed here
    assert "data.storage_options.secret_key (pipelines/s3.yaml)" in out.err
    assert SECRET not in out.err and SESSION not in out.err

    [job] = [r for r in dash.requests if r.method == "POST"]
    body = json.loads(job.body)
    assert SECRET.encode() not in job.body and SESSION.encode() not in job.body
    # The settings that are not credentials still reach the job.
    assert "train.epochs=1" in body["entrypoint"]
    assert 'data.storage_options={"scheme": "http"}' in body["entrypoint"]
    [upload] = [r for r in dash.requests if r.method == "PUT"]
    files = zipfile.ZipFile(io.BytesIO(upload.body))
    texts = {name: files.read(name).decode() for name in files.namelist() if not name.endswith("/")}
    assert "pipelines/s3.yaml" in texts
    for name, text in texts.items():
        assert SECRET not in text and SESSION not in text and "AKIDPLANTED" not in text, name
    assert "minio.internal:9000" in texts["pipelines/s3.yaml"]

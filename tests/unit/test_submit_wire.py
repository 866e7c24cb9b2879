"""What ``mm-ray submit`` / ``mm-ray jobs`` put on the wire, seen by a recording dashboard on loopback:
the auth header, and no storage credential in the entrypoint, the request body or the uploaded files."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
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
    )


def _with_secret(root: Path, name: str) -> str:
    (root / name).write_text(
        (root / "pipelines" / "s3.yaml").read_text()
        + f"    access_key: AKIDPLANTED\n    secret_key: {SECRET}\n    session_token: {SESSION}\n"
    )
    return name


# Each way a credential could ride along, and the key the refusal must name. The first three slipped past the
# word-matching scrub this replaces.
CARRIERS = {
    "flow-style override": (
        ["data={storage_options: {secret_key: " + SECRET + "}}"],
        "data.storage_options.secret_key",
    ),
    "leading space": ([f" data.storage_options.secret_key={SECRET}"], "data.storage_options.secret_key"),
    "--config x.cfg": (["--config", "{cfg}"], "data.storage_options.secret_key (pipelines/s3.cfg)"),
    "dotted override": (
        [f"data.storage_options.session_token={SESSION}"],
        "data.storage_options.session_token",
    ),
    "JSON options": (
        [f'data.storage_options={{"scheme": "http", "aws_secret_access_key": "{SECRET}"}}'],
        "data.storage_options.aws_secret_access_key (command line)",
    ),
    "a pipelines/ file the command does not name": (
        ["--config", "pipelines/s3.yaml"],
        "(pipelines/other.yml)",
    ),
    "password in a URL": ([f"https://user:{SECRET}@example.com/x.tar"], "user:password@"),
}


@pytest.mark.parametrize("carrier", sorted(CARRIERS))
def test_a_job_carrying_a_credential_is_refused_naming_it_and_nothing_is_sent(
    tmp_path: Path, monkeypatch, capsys, carrier
) -> None:
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    words, key = CARRIERS[carrier]
    if carrier == "a pipelines/ file the command does not name":
        _with_secret(tmp_path, "pipelines/other.yml")
    cfg = _with_secret(tmp_path, "pipelines/s3.cfg") if "{cfg}" in words else ""
    command = ["train", *(w.replace("{cfg}", cfg) for w in words), "train.epochs=1"]
    with RecordingDashboard() as dash:
        assert main(["submit", "--no-wait", "--address", dash.address, "--", *command]) == 2
    out = capsys.readouterr()
    assert key in out.err and "never carries credentials" in out.err and "AWS_ACCESS_KEY_ID" in out.err
    assert SECRET not in out.out + out.err and SESSION not in out.out + out.err
    assert not [r for r in dash.requests if r.method in ("POST", "PUT")]  # no job, no upload


def test_a_job_with_storage_settings_but_no_credential_is_sent_as_it_is(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    command = ["train", "--config", "pipelines/s3.yaml", "data.storage_options.scheme=http", "train.epochs=1"]
    with RecordingDashboard() as dash:
        assert main(["submit", "--no-wait", "--address", dash.address, "--", *command]) == 0
    assert (
        "mm-ray train --config pipelines/s3.yaml data.storage_options.scheme=http" in capsys.readouterr().out
    )
    [job] = [r for r in dash.requests if r.method == "POST"]
    assert json.loads(job.body)["entrypoint"].endswith("data.storage_options.scheme=http train.epochs=1")
    [upload] = [r for r in dash.requests if r.method == "PUT"]
    files = zipfile.ZipFile(io.BytesIO(upload.body))
    assert "minio.internal:9000" in files.read("pipelines/s3.yaml").decode()

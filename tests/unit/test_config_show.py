"""``mm-ray config show`` never prints a credential: set ones show as ``<hidden>``, settings as they are."""

from __future__ import annotations

import yaml

from mm_ray.cli.main import main

SECRET = "wJalrXUtnFEMI-planted-secret"


def test_config_show_hides_credentials_and_keeps_settings(capsys) -> None:
    options = f"data.storage_options={{secret_key: {SECRET}, session_token: {SECRET}t, region: eu-west-1}}"
    mlflow = f"track.mlflow=https://me:{SECRET}@mlflow.example/x"
    assert main(["config", "show", options, mlflow, "image.size=48"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    shown = yaml.safe_load(out)
    assert shown["data"]["storage_options"] == {
        "secret_key": "<hidden>",
        "session_token": "<hidden>",
        "region": "eu-west-1",
    }
    assert shown["track"]["mlflow"] == "https://mlflow.example/x" and shown["image"]["size"] == 48

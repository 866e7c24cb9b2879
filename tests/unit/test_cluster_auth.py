"""Which auth token ``mm-ray submit`` / ``mm-ray jobs`` send, and how."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mm_ray.cluster.auth import TokenError, auth_headers, resolve_token


def test_the_first_source_that_is_set_wins(tmp_path: Path) -> None:
    flag_file, env_file = tmp_path / "flag", tmp_path / "env"
    flag_file.write_text("from-file\n")
    env_file.write_text("from-env-path")
    env = {"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(env_file)}
    assert resolve_token("from-flag", str(flag_file), env=env) == "from-flag"
    assert resolve_token(None, str(flag_file), env=env) == "from-file"  # stripped
    assert resolve_token(None, None, env=env) == "from-env"
    assert resolve_token(None, None, env={"RAY_AUTH_TOKEN_PATH": str(env_file)}) == "from-env-path"


def test_the_default_token_file_is_used_only_in_token_mode(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("local-token")
    assert resolve_token(env={}) is None  # a local Ray's own token is not sent to other clusters
    assert resolve_token(env={"RAY_AUTH_MODE": "token"}) == "local-token"


def test_a_named_source_without_a_token_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(TokenError, match=r"--token-file: the token file .*empty is empty"):
        resolve_token(None, str(tmp_path / "empty"), env={})
    with pytest.raises(TokenError, match=r"RAY_AUTH_TOKEN_PATH: cannot read the token file .*missing"):
        resolve_token(env={"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})


def test_the_token_travels_as_a_bearer_header() -> None:
    assert auth_headers("abc") == {"Authorization": "Bearer abc"}
    assert auth_headers(None) == {}


def test_the_flags_win_over_the_environment_even_in_token_mode(tmp_path: Path) -> None:
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "from-env"}
    assert resolve_token("from-flag", env=env) == "from-flag"
    assert resolve_token(None, None, env={"RAY_AUTH_MODE": "disabled"}) is None


def test_rays_client_keeps_an_explicit_header_even_when_its_own_token_differs() -> None:
    """In token mode Ray adds the token it found, unless a header is given: ours (from a flag) wins.

    A subprocess: Ray reads RAY_AUTH_MODE / RAY_AUTH_TOKEN once per process.
    """
    code = (
        "from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled"
        " as h; from mm_ray.cluster.auth import auth_headers;"
        " print(h({}), h(auth_headers('from-flag')))"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "from-env"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split("} ")[0] + "}" == "{'authorization': 'Bearer from-env'}", out.stderr[-2000:]
    assert out.stdout.strip().endswith("} {}")


def test_a_token_on_the_command_line_still_works_but_warns(capsys) -> None:
    from mm_ray.cli.main import parse_args

    args = parse_args(["jobs", "list", "--address", "http://127.0.0.1:1", "--token", "t0k"])
    assert args.token == "t0k"
    assert "--token is deprecated" in capsys.readouterr().err
    quiet = parse_args(["jobs", "list", "--address", "http://127.0.0.1:1", "--token-file", "f"])
    assert quiet.token is None and capsys.readouterr().err == ""


def test_without_flags_the_process_environment_decides_in_rays_order(tmp_path: Path, monkeypatch) -> None:
    """No flag, no ``env`` argument: ``RAY_AUTH_TOKEN``, then ``RAY_AUTH_TOKEN_PATH``, then the default file
    (token mode only), each read from this process's environment."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-default-file")
    (tmp_path / "named").write_text("from-env-path")
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_token() is None
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert resolve_token() == "from-default-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "named"))
    assert resolve_token() == "from-env-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert resolve_token() == "from-env"

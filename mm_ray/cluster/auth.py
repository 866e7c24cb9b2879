"""Which Ray auth token a job-submission client sends, and the HTTP header that carries it.

    token = resolve_token(flag=args.token, token_file=args.token_file)   # None: send nothing
    JobSubmissionClient(address, headers=auth_headers(token))

A cluster started with ``RAY_AUTH_MODE=token`` refuses requests without its token (HTTP 401, or 403 for a
wrong one; Ray raises ``ray.exceptions.AuthenticationError``). The token comes from, in this order: the
``--token`` flag, the ``--token-file`` flag, ``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``,
and Ray's default ``~/.ray/auth_token`` (that one only when ``RAY_AUTH_MODE=token``, as Ray does: a local
``ray.init()`` writes a token there for itself, and it is no business of a remote cluster).

Why the header is passed explicitly: Ray 2.60's client adds ``authorization: Bearer <token>`` itself only
when auth is on in the client process, and both the mode and the token are read once, in Ray's C++ core,
on first use (setting ``os.environ`` afterwards changes nothing). A header the caller passes is kept as
is, so the flags work whatever the process environment says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")

HOW_TO_AUTHENTICATE = (
    "pass the cluster's token with --token TOKEN or --token-file PATH, or set RAY_AUTH_TOKEN, or "
    "RAY_AUTH_TOKEN_PATH=PATH, or RAY_AUTH_MODE=token to use ~/.ray/auth_token "
    "(the token is in the head node's RAY_AUTH_TOKEN_PATH file; `ray get-auth-token` prints it there)"
)
"""What to tell someone whose request an authenticated cluster refused."""


class TokenError(ValueError):
    """A token source was named but holds no token; the message names it."""


def resolve_token(
    flag: str | None = None, token_file: str | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The token to send, from the first source that is set (see the module docstring), or None."""
    env = os.environ if env is None else env
    if flag:
        return flag.strip()
    if token_file:
        return _read(Path(token_file), "--token-file")
    if env.get("RAY_AUTH_TOKEN"):
        return env["RAY_AUTH_TOKEN"].strip()
    if env.get("RAY_AUTH_TOKEN_PATH"):
        return _read(Path(env["RAY_AUTH_TOKEN_PATH"]), "RAY_AUTH_TOKEN_PATH")
    default = DEFAULT_TOKEN_FILE.expanduser()
    if env.get("RAY_AUTH_MODE") == "token" and default.is_file():
        return _read(default, str(DEFAULT_TOKEN_FILE))
    return None


def auth_headers(token: str | None) -> dict[str, str]:
    """The request headers that authenticate with ``token`` (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _read(path: Path, source: str) -> str:
    try:
        token = path.expanduser().read_text().strip()
    except OSError as err:
        raise TokenError(f"{source}: cannot read the token file {path}: {err.strerror}") from None
    if not token:
        raise TokenError(f"{source}: the token file {path} is empty")
    return token

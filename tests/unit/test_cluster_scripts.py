"""``cluster/local/start_head.sh`` creates the cluster's token file private from its first byte (the umask is set
before the write, not a ``chmod`` after it). Run for real with ``ray`` replaced by a stand-in that only records
its arguments, and ``chmod`` by one that records the token file's mode when the script calls it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "cluster" / "local" / "start_head.sh"


@pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("stat") is None, reason="needs bash and stat"
)
def test_the_token_file_is_never_readable_by_others(tmp_path: Path) -> None:
    bin_dir, token = tmp_path / "bin", tmp_path / "home" / ".ray" / "auth_token"
    bin_dir.mkdir()
    (bin_dir / "ray").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "ray_args"}\n')
    real_chmod = shutil.which("chmod")
    (bin_dir / "chmod").write_text(
        f'#!/bin/sh\nstat -c %a "$2" >> {tmp_path / "mode_before_chmod"}\nexec {real_chmod} "$@"\n'
    )
    for tool in ("ray", "chmod"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path / "home"),
           "RAY_AUTH_TOKEN_PATH": str(token), "CPUS": "1"}  # fmt: skip
    subprocess.run(["bash", str(SCRIPT)], env=env, check=True, capture_output=True, umask=0o022)
    assert (tmp_path / "mode_before_chmod").read_text().split() == ["600"]
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) == 64
    assert stat.S_IMODE(token.parent.stat().st_mode) & 0o077 == 0  # the directory it made is private too
    assert "--head" in (tmp_path / "ray_args").read_text()

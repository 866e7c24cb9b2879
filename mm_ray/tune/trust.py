"""What resuming a sweep trusts: the files Tune unpickles, and the sweep's own saved settings.

Ray Tune resumes by unpickling: ``tuner.pkl``, the cloudpickled fields of every trial in
``experiment_state-*.json``, the searcher's ``searcher-state-*.pkl`` and each trial's ``error.pkl`` (Ray has no
other way to resume: ``Tuner.restore``). Whoever can write any of them can run code in the process that resumes,
so the experiment's storage is a trust boundary:

    check_trusted_storage("/runs/tune/sweep")         # every file and directory of it, and the directories above
    check_trusted_storage("file:///runs/tune/sweep")  # the same local path
    check_trusted_storage("s3://bucket/sweeps/x")     # warns: the bucket's write policy is the boundary

A local experiment passes when this user owns every file and directory in it and no one else can write any of
them, nor replace it through a directory above it (a directory above may be writable by others only with the
sticky bit, as ``/tmp`` is). ``check_trusted_results`` applies the same rule to the results directory whose
``sweep.yaml`` says where the experiment is and which config its trials run.
"""

from __future__ import annotations

import logging
import os
import stat
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from mm_ray.config.load import ConfigError

logger = logging.getLogger(__name__)


def local_path(location: str) -> Path | None:
    """The local path of ``location`` (a path or a ``file://`` URI); None for remote storage (``s3://``...)."""
    if "://" not in location:
        return Path(location)
    parts = urllib.parse.urlsplit(location)
    if parts.scheme != "file":
        return None
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"--resume: {location}: a file:// URI of another host is not a local path")
    return Path(urllib.parse.unquote(parts.path))


def writable_by_others(mode: int, uid: int, gid: int, *, my_uid: int, my_gid: int) -> bool:
    """Whether a file of ``mode``/``uid``/``gid`` could be written (or replaced) by someone but this user.

    Group write counts only for a group other than this user's own: with umask 002 and per-user groups every
    directory is group-writable, by the user alone."""
    foreign_group_write = bool(mode & stat.S_IWGRP) and gid != my_gid
    return uid != my_uid or bool(mode & stat.S_IWOTH) or foreign_group_write


def check_trusted_storage(experiment_path: str) -> None:
    """Refuse to resume from an experiment that someone else could have written (``ConfigError`` naming the
    path and the fix); for remote storage, warn that the bucket is the trust boundary."""
    path = local_path(experiment_path)
    if path is None:
        logger.warning(
            "resuming unpickles Tune's state from %s: anyone who can write there can run code in this "
            "process; the bucket's write policy is the trust boundary",
            experiment_path,
        )
        return
    _check_tree(path.resolve() if path.exists() else path, what="Tune's saved state")


def check_trusted_results(results_dir: Path) -> None:
    """``ConfigError`` unless ``results_dir`` (and its ``sweep.yaml``) could only have been written by this user:
    the file says where the experiment to unpickle is and what config the resumed trials run."""
    if results_dir.exists():
        _check_tree(results_dir.resolve(), what="the sweep's saved config")


def _check_tree(root: Path, *, what: str) -> None:
    me, my_group = os.getuid(), os.getgid()
    for path in _above(root):
        st = path.stat()
        shielded = bool(st.st_mode & stat.S_ISVTX)  # sticky (/tmp): others may write, not replace our entries
        others = writable_by_others(st.st_mode, me, st.st_gid, my_uid=me, my_gid=my_group)
        if st.st_uid not in (me, 0) or (others and not shielded):
            _refuse(path, st, f"a directory above it can be changed by others, so {root} could be replaced")
    for path in _tree(root):
        if path.is_symlink():  # a link's own mode is always 777: its owner, then what it points at
            link = path.lstat()
            if link.st_uid != me:
                _refuse(path, link, f"resuming would read {what} through it")
            if not path.exists():
                continue
        st = path.stat()
        if writable_by_others(st.st_mode, st.st_uid, st.st_gid, my_uid=me, my_gid=my_group):
            _refuse(path, st, f"resuming would read {what} from it")


def _above(root: Path) -> Iterator[Path]:
    yield from (p for p in root.parents if p.exists())


def _tree(root: Path) -> Iterator[Path]:
    """``root`` and everything below it, through links to directories too (Tune would read through them)."""
    if not root.exists():
        return
    yield root
    seen = {root.resolve()}
    for directory, dirs, files in os.walk(root, followlinks=True):
        for name in files:
            yield Path(directory) / name
        for name in list(dirs):
            path = Path(directory) / name
            yield path
            real = path.resolve()
            if real in seen:  # a loop of links: checked once
                dirs.remove(name)
            seen.add(real)


def _refuse(path: Path, st: os.stat_result, why: str) -> None:
    raise ConfigError(
        f"--resume: {path} is writable by other users or owned by someone else (mode "
        f"{oct(st.st_mode & 0o7777)}, owner uid {st.st_uid}); {why}, and Tune's state is unpickled: a planted "
        f"file would run its code here. Check it, then `chmod go-w {path}` (and own it) to resume"
    )

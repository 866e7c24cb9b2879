"""``mm-ray bench hostile``: what a hostile shard costs a whole ``preprocess`` run (time, peak memory per process).

Each case is one real shard made from a demo shard's good samples with one hostile sample put among them:

- ``bomb``: a ``.tar.gz`` whose one member inflates to ``--bomb-gib`` GiB of zeros (a few MB on disk);
- ``bomb_bz2``, ``bomb_xz``: the same bomb as a ``.tar.bz2`` / ``.tar.xz`` (a few KB / a few hundred KB:
  tarfile's own streaming decompression of these was uncapped and quadratic);
- ``caption``: a 100 MB caption (over ``data.max_member_bytes``, rejected from the tar header);
- ``caption_under_member_cap``: a 60 MB caption, under the member cap, so only ``text.max_caption_bytes``
  (tokenizer training and the text pool) stands in its way.

Each case runs ``build_cache`` (tokenizer training included) in a fresh interpreter under a process-tree
monitor, so its figures are its own: wall time, the peak PSS of the largest single process (driver, Ray
worker or daemon), the sum over the tree, and what the ledger said. The baseline is the same shard
without the hostile sample, in the same run. Usage::

    mm-ray bench hostile            # all cases, 2 GiB bombs
    mm-ray bench hostile --modes bomb,bomb_bz2,bomb_xz
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import functools
import gzip
import io
import json
import lzma
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mm_ray.bench.measure import TreeMonitor, run_spec
from mm_ray.bench.records import HostileCase

CASES = ("baseline", "bomb", "bomb_bz2", "bomb_xz", "caption", "caption_under_member_cap")
BOMBS = {  # case: (shard suffix, how the whole shard is compressed as it is written)
    "bomb": (".tar.gz", functools.partial(gzip.open, compresslevel=6)),
    "bomb_bz2": (".tar.bz2", functools.partial(bz2.open, compresslevel=9)),
    "bomb_xz": (".tar.xz", functools.partial(lzma.open, format=lzma.FORMAT_XZ)),
}
HOSTILE_KEY = "hostile"
CAPTION_MB = {"caption": 100, "caption_under_member_cap": 60}


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced as read: the bomb is written without ever being held in memory."""

    def __init__(self, size: int):
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._left)
        buffer[:n] = bytes(n)
        self._left -= n
        return n


def _good_members(demo_shard: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(demo_shard) as tar:
        return [(info, tar.extractfile(info).read()) for info in tar.getmembers() if info.isfile()]


def _member(name: str, size: int, stream: io.RawIOBase | io.BytesIO) -> tuple[tarfile.TarInfo, Any]:
    info = tarfile.TarInfo(name)
    info.size = size
    return info, stream


def _hostile_members(case: str, gib: float) -> Iterator[tuple[tarfile.TarInfo, Any]]:
    if case in BOMBS:
        size = int(gib * 2**30)
        yield _member(f"{HOSTILE_KEY}.jpg", size, _Zeros(size))
    elif case in CAPTION_MB:
        text = b"word " * (CAPTION_MB[case] * 2**20 // 5)
        yield _member(f"{HOSTILE_KEY}.txt", len(text), io.BytesIO(text))
    yield _member(f"{HOSTILE_KEY}.cls", 1, io.BytesIO(b"0"))


def write_case_shard(case: str, demo_shard: Path, out: Path, gib: float = 2.0) -> Path:
    """The demo shard's samples with ``case``'s hostile sample in the middle (a bomb's whole shard compressed)."""
    good = _good_members(demo_shard)
    middle = len(good) // 2
    # Keep whole samples together: split where the key changes.
    while (
        0 < middle < len(good)
        and good[middle][0].name.split(".")[0] == good[middle - 1][0].name.split(".")[0]
    ):
        middle += 1
    suffix, opener = BOMBS.get(case, (".tar", open))
    path = out / f"{case}{suffix}"
    with contextlib.ExitStack() as stack:
        tar = stack.enter_context(tarfile.open(fileobj=stack.enter_context(opener(path, "wb")), mode="w|"))
        for info, data in good[:middle]:
            tar.addfile(info, io.BytesIO(data))
        if case != "baseline":
            for info, stream in _hostile_members(case, gib):
                tar.addfile(info, stream)
        for info, data in good[middle:]:
            tar.addfile(info, io.BytesIO(data))
    return path


def bench_hostile(cases: list[str], overrides: list[str], gib: float = 2.0) -> dict[str, HostileCase]:
    """Run every case (each in a fresh interpreter) and return ``{case: figures}``."""
    from mm_ray.demo.dataset import make_shards

    results: dict[str, HostileCase] = {}
    with tempfile.TemporaryDirectory(prefix="mm_ray_hostile_") as tmp:
        root = Path(tmp)
        manifest = make_shards(
            root / "demo", num_samples=200, samples_per_shard=200, val_fraction=0.0, workers=1
        )
        demo_shard = root / "demo" / manifest["shards"]["train"][0]
        for case in ["baseline", *[c for c in cases if c != "baseline"]]:
            shard = write_case_shard(case, demo_shard, root, gib)
            spec = {"shard": str(shard), "overrides": overrides, "cache": str(root / f"cache_{case}")}
            figures = run_spec("mm_ray.bench.hostile", spec, dict(os.environ), what=f"bench hostile {case}")
            shard_mb = round(shard.stat().st_size / 2**20, 1)
            results[case] = dataclasses.replace(HostileCase.from_dict(figures), shard_mb=shard_mb)
    return results


def hostile_table(results: dict[str, HostileCase]) -> str:
    from mm_ray.tables import format_table

    rows = [
        [
            case,
            r.shard_mb,
            r.seconds,
            r.largest_process_mb,
            r.largest_process,
            r.tree_peak_mb,
            r.samples_ok,
            ", ".join(f"{k}={v}" for k, v in {**r.quarantine_reasons, **r.members_ignored}.items()) or "-",
        ]
        for case, r in results.items()
    ]
    headers = [
        "case",
        "shard MB",
        "seconds",
        "largest process MB",
        "which",
        "tree PSS MB",
        "samples ok",
        "set aside",
    ]
    return format_table(headers, rows)


def _run_case(spec: dict[str, Any]) -> HostileCase:
    from mm_ray.config.load import load_config
    from mm_ray.data.build import build_cache

    cfg = load_config(None, ["ray.num_cpus=2", *spec["overrides"]])
    started = time.perf_counter()
    with TreeMonitor(os.getpid(), interval=0.2) as monitor:
        cache = build_cache(cfg, [spec["shard"]], spec["cache"])
    seconds = time.perf_counter() - started
    group, peak = monitor.largest_process()
    ingest = cache.manifest.ingest
    return HostileCase(
        seconds=round(seconds, 1),
        largest_process_mb=round(peak),
        largest_process=group,
        tree_peak_mb=round(monitor.peak_pss_mb),
        samples_ok=ingest.samples_ok,
        quarantine_reasons=ingest.quarantine_reasons,
        members_ignored=ingest.members_ignored,
    )


def _worker_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    Path(spec["out"]).write_text(json.dumps(_run_case(spec).to_dict()))


if __name__ == "__main__":
    _worker_main(sys.argv[1])

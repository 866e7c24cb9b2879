"""The benchmark commands end to end on tiny data (slow tier: three fresh Ray/DataLoader subprocesses)."""

from __future__ import annotations

import json

import pytest

from mm_ray.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ["demo.num_samples=48", "demo.samples_per_shard=12", "demo.min_image_px=64", "demo.max_image_px=96"]


def test_bench_ingest_reports_all_three_pipelines_and_ratios(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert (
        main(["bench", "ingest", f"output_dir={tmp_path}", *TINY, "image.size=32", "--json", str(out)]) == 0
    )
    summary = json.loads(out.read_text())
    assert set(summary["results"]) == {"floor", "dataloader", "ray"}
    for result in summary["results"].values():
        # The generated split is train only (val_fraction=0): all 48 samples, nothing quarantined.
        assert result["samples"] == 48
        assert result["peak_pss_mb"] > 0
    assert {"c/b", "c/a", "c/b steady"} <= set(summary["ratios"])
    ray_cpu = summary["results"]["ray"]["cpu_s_by_process"]
    assert any("ImageStage" in group for group in ray_cpu), ray_cpu  # the pools really ran as actors
    assert "ratios: c/b" in capsys.readouterr().out


def test_bench_memory_runs_one_and_ten_times_the_data(tmp_path) -> None:
    out = tmp_path / "memory.json"
    assert (
        main(["bench", "memory", f"output_dir={tmp_path}", *TINY, "image.size=32", "--json", str(out)]) == 0
    )
    summary = json.loads(out.read_text())
    assert summary["results"]["1x"]["samples"] == 48
    assert summary["results"]["10x"]["samples"] == 480
    assert summary["memory_ratio_10x_1x"] > 0

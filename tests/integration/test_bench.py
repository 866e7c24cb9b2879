"""The benchmark commands end to end on tiny data (slow tier: three fresh Ray/DataLoader subprocesses)."""

from __future__ import annotations

import json
import math

import pytest

from mm_ray.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ["demo.num_samples=48", "demo.samples_per_shard=12", "demo.min_image_px=64", "demo.max_image_px=96"]
# Batches of 8, so 48 samples make several and every mode has a steady window after its first batch.
SMALL_BATCHES = ["image.size=32", "pools.fused.batch_size=8"]


def test_bench_ingest_reports_all_three_pipelines_and_ratios(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "ingest", f"output_dir={tmp_path}", *TINY, *SMALL_BATCHES, "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    # (d) raydata: the simplest Ray Data pipeline with the same decoders.
    assert set(summary["results"]) == {"floor", "dataloader", "ray", "raydata"}
    for result in summary["results"].values():
        # The generated split is train only (val_fraction=0): all 48 samples, nothing quarantined.
        assert result["samples"] == 48
        assert result["peak_pss_mb"] > 0
    assert {"c/b", "c/a", "c/b steady", "c/d", "d/b"} <= set(summary["ratios"])
    ray_cpu = summary["results"]["ray"]["cpu_s_by_process"]
    assert any("ShardStage" in group for group in ray_cpu), ray_cpu  # the pool really ran as actors
    assert "c/b = " in capsys.readouterr().out


def test_bench_ingest_repeats_interleaved_rounds_and_reports_median_ratios(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "ingest", f"output_dir={tmp_path}", *TINY, *SMALL_BATCHES, "--modes", "dataloader,ray"]
    assert main([*args, "--repeat", "3", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["rounds"] == 3 and len(summary["ratios_by_round"]) == 3
    for result in summary["results"].values():
        assert len(result["steady_samples_per_s_runs"]) == 3
    steady = sorted(r["c/b steady"] for r in summary["ratios_by_round"])
    assert summary["ratios"]["c/b steady"] == steady[1]  # the median round, not a ratio of medians
    assert "c/a" not in summary["ratios"]  # no decode floor ran
    assert "round 3:" in capsys.readouterr().out


def test_bench_memory_runs_one_and_ten_times_the_data(tmp_path) -> None:
    out = tmp_path / "memory.json"
    assert (
        main(["bench", "memory", f"output_dir={tmp_path}", *TINY, "image.size=32", "--json", str(out)]) == 0
    )
    summary = json.loads(out.read_text())
    assert summary["results"]["1x"]["samples"] == 48
    assert summary["results"]["10x"]["samples"] == 480
    assert summary["memory_ratio_10x_1x"] > 0


def test_bench_stream_memory_trains_on_one_and_three_times_the_data(tmp_path, capsys) -> None:
    out = tmp_path / "stream_memory.json"
    argv = [
        "bench",
        "stream-memory",
        f"output_dir={tmp_path}",
        *TINY,
        "demo.val_fraction=0.0",
        "--scale",
        "3",
    ]
    assert main([*argv, "--cores", "2", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    # Every sample trained once per run: 48, then the same shards under three names each.
    assert summary["results"]["1x"]["samples"] == 48
    assert summary["results"]["3x"]["samples"] == 144
    assert summary["memory_ratio"] > 0 and summary["results"]["3x"]["peak_rss_mb"] > 0
    assert "peak PSS ratio 3x/1x" in capsys.readouterr().out


def test_bench_train_compares_the_plain_loop_with_one_and_two_ray_workers(tmp_path, capsys) -> None:
    out = tmp_path / "train.json"
    small = ["image.size=32", "audio.n_mels=16", "text.max_length=16", "train.batch_size=8", "train.epochs=2"]
    model = ["model.width=8", "model.depth=1", "model.fusion_dim=8"]
    args = ["bench", "train", f"output_dir={tmp_path}", *TINY, *small, *model, "--cores", "2"]
    assert main([*args, "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    results = summary["results"]
    assert set(results) == {"plain", "ray1", "ray2"}
    for mode, result in results.items():
        # Every mode trained on the whole generated split (48 samples, val_fraction=0) twice.
        assert result["epochs"] == 2 and result["samples"] == 2 * 48, mode
        for key in ("steady_samples_per_s", "samples_per_s", "startup_s"):
            assert math.isfinite(result[key]) and result[key] > 0, (mode, key, result[key])
    # torch's intra-op threads follow the trainer's CPUs: all cores for the plain loop and one worker,
    # half of them each for two workers (Ray sets OMP_NUM_THREADS from a worker's CPUs).
    assert [results[m]["torch_threads"] for m in ("plain", "ray1", "ray2")] == [2, 2, 1]
    ratios = summary["ratios"]
    assert set(ratios) == {f"{m}/plain {kind}" for m in ("ray1", "ray2") for kind in ("steady", "end to end")}
    assert all(math.isfinite(v) and v > 0 for v in ratios.values()), ratios
    printed = capsys.readouterr().out
    assert "ray1/plain steady" in printed and "mm_ray fit, 2 Ray Train workers" in printed


def test_bench_train_from_shards_compares_the_dataloader_loop_with_streaming_and_the_cache(
    tmp_path, capsys
) -> None:
    out = tmp_path / "train.json"
    small = ["image.size=32", "audio.n_mels=16", "text.max_length=16", "train.batch_size=8", "train.epochs=2"]
    model = ["model.width=8", "model.depth=1", "model.fusion_dim=8"]
    args = ["bench", "train", "--source", "shards", f"output_dir={tmp_path}", *TINY, *small, *model]
    assert main([*args, "--cores", "2", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    results = summary["results"]
    # stream1e: streaming with one Ray Data execution per epoch (stream1: one for the run).
    assert set(results) == {"loader", "stream1", "stream1e", "ray1"}
    for mode, result in results.items():
        # Each mode read every sample of the generated split (48, val_fraction=0) in each of the 2 epochs.
        assert result["epochs"] == 2 and result["samples"] == 2 * 48, mode
    assert set(summary["ratios"]) == {
        f"{m}/loader {kind}" for m in ("stream1", "stream1e", "ray1") for kind in ("steady", "end to end")
    }
    parts = results["stream1"]["startup_parts"]
    assert parts["to_worker_s"] > 0 and parts["worker_to_first_batch_s"] >= 0
    printed = capsys.readouterr().out
    assert "target stream1/loader steady" in printed and "start-up of the Ray modes" in printed

"""How the ingest benchmark turns runs into ratios: c (mm_ray) over b (DataLoader) and a (decode floor), for
whichever modes ran, and the median run of repeated ones."""

from __future__ import annotations

from mm_ray.bench.measure import median_run
from mm_ray.bench.records import IngestRun
from mm_ray.bench.runner import ingest_ratios


def _run(rate: float, steady: float, first: float) -> IngestRun:
    return IngestRun(
        samples=100,
        seconds=100 / rate,
        first_batch_s=first,
        samples_per_s=rate,
        steady_samples_per_s=steady,
        peak_pss_mb=500.0,
        cpu_s_by_process={"driver": 1.0},
    )


def test_ratios_compare_mm_ray_with_each_baseline_that_ran() -> None:
    runs = {"floor": _run(400, 400, 0), "dataloader": _run(320, 340, 2.5), "ray": _run(300, 323, 3.75)}
    assert ingest_ratios(runs) == {"c/b": 0.938, "c/b steady": 0.95, "first batch c/b": 1.5, "c/a": 0.75}
    assert ingest_ratios({"dataloader": runs["dataloader"], "ray": runs["ray"]}) == {
        "c/b": 0.938,
        "c/b steady": 0.95,
        "first batch c/b": 1.5,
    }
    assert ingest_ratios({"floor": runs["floor"], "dataloader": runs["dataloader"]}) == {}


def test_the_ray_data_floor_splits_the_gap_into_mm_rays_share_and_ray_datas() -> None:
    runs = {"dataloader": _run(320, 340, 2.0), "ray": _run(288, 323, 3.0), "raydata": _run(300, 340, 2.5)}
    ratios = ingest_ratios(runs)
    # c/d: 288/300, 323/340, 3/2.5; d/b: 300/320, 340/340, 2.5/2 (computed by hand).
    assert (ratios["c/d"], ratios["c/d steady"], ratios["first batch c/d"]) == (0.96, 0.95, 1.2)
    assert (ratios["d/b"], ratios["d/b steady"], ratios["first batch d/b"]) == (0.938, 1.0, 1.25)
    # c/d x d/b is c/b.
    assert abs(ratios["c/d"] * ratios["d/b"] - ratios["c/b"]) < 0.002
    assert ingest_ratios({"dataloader": runs["dataloader"], "raydata": runs["raydata"]}).keys() == {
        "d/b",
        "d/b steady",
        "first batch d/b",
    }


def test_a_run_without_a_steady_window_has_no_steady_ratio_and_no_division_by_zero() -> None:
    # A run too short for a steady window (every sample before it) reports a steady rate of 0.
    runs = {"dataloader": _run(320, 340, 2.0), "ray": _run(288, 323, 3.0), "raydata": _run(300, 0.0, 2.5)}
    ratios = ingest_ratios(runs)
    assert "c/d steady" not in ratios and "d/b steady" not in ratios
    assert (ratios["c/d"], ratios["c/b steady"]) == (0.96, 0.95)


def test_the_median_run_is_picked_by_steady_rate_and_keeps_every_rate() -> None:
    runs = [_run(300, 330, 3), _run(290, 310, 4), _run(310, 350, 3)]
    picked = median_run(runs)
    assert picked.samples_per_s == 300
    assert picked.steady_samples_per_s_runs == (330, 310, 350)


def test_the_benchmark_reads_the_shards_its_manifest_lists_not_leftovers(tmp_path) -> None:
    from mm_ray.bench.runner import _shard_urls
    from mm_ray.config.load import load_config

    small = [
        "demo.min_image_px=32",
        "demo.max_image_px=40",
        "demo.samples_per_shard=4",
        "demo.val_fraction=0",
    ]
    larger = load_config(None, [f"output_dir={tmp_path}", "name=b", "demo.num_samples=16", *small])
    assert len(_shard_urls(larger, [])) == 4
    # A smaller generation in the same directory leaves the larger one's later shards behind.
    smaller = load_config(None, [f"output_dir={tmp_path}", "name=b", "demo.num_samples=8", *small])
    assert len(_shard_urls(smaller, [])) == 2
    assert len(list((tmp_path / "b" / "shards").glob("*.tar"))) == 4

"""``mm-ray bench train``'s report of the large-run modes: the rounds' ratios, the validation columns, the step
checkpoints' share and the verdicts, printed from the typed summary. No Ray: the benchmark itself is replaced by
the summary made up here, and the command prints it."""

from __future__ import annotations

from mm_ray.bench import train as train_bench
from mm_ray.bench.records import BenchModel, TrainBench, TrainRun
from mm_ray.cli.main import main


def _run(steady: float, val: float | None = None, pss: float | None = 100.0, **extra) -> TrainRun:
    return TrainRun(
        epochs=3,
        samples=300,
        epoch_seconds=(2.0, 1.0, 1.0),
        steady_samples_per_s=steady,
        startup_s=5.0,
        seconds=10.0,
        samples_per_s=30.0,
        torch_threads=1,
        peak_pss_mb=pss,
        cpu_s_by_process={"driver": 1.0},
        steady_val_seconds=val,
        **extra,
    )


def test_the_large_run_modes_report_their_rounds_columns_and_verdicts(capsys, monkeypatch) -> None:
    runs = {
        # The validation modes time without reading memory (``TreeMonitor(memory=False)``): no PSS.
        "val1": [
            _run(100.0, val=10.0, pss=None, steady_val_cpu_seconds=9.0),
            _run(100.0, val=12.0, pss=None),
        ],
        "val2": [_run(180.0, val=5.0, pss=None, steady_val_cpu_seconds=4.0), _run(180.0, val=9.0, pss=None)],
        "ckpt200": [_run(99.0, step_checkpoints=2, step_checkpoint_s=0.03, step_checkpoint_share=0.003)] * 2,
        "eager": [_run(100.0)] * 2,
    }
    by_round = [train_bench.large_ratios({m: r[i] for m, r in runs.items()}) for i in range(2)]
    # Each round's own pair: 5/10 and 9/12.
    assert [r["val2/val1 validation seconds"] for r in by_round] == [0.5, 0.75]
    assert by_round[0]["val2/val1 validation CPU seconds (slowest worker)"] == round(4 / 9, 3)
    assert "val2/val1 validation CPU seconds (slowest worker)" not in by_round[1]  # not measured in round 2
    summary = TrainBench(
        cores=2,
        source="cache",
        cache="c",
        shards=None,
        epochs=3,
        model=BenchModel("late_concat", 64, 2),
        batch_size=64,
        results={m: r[0] for m, r in runs.items()},
        ratios={"val2/val1 validation seconds": 0.625, "ckpt200/eager steady": 0.99},
        rounds=2,
        large_ratios_by_round=tuple(by_round),
    )
    assert TrainBench.from_dict(summary.to_dict()) == summary
    monkeypatch.setattr("mm_ray.bench.runner.bench_train", lambda **_: summary)
    assert main(["bench", "train", "--modes", "val1,val2,ckpt200,eager", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "round 1: ckpt200/eager steady = 0.990, val2/val1 validation seconds = 0.500" in out
    assert "round 2: ckpt200/eager steady = 0.990, val2/val1 validation seconds = 0.750" in out
    assert "validation s (epochs >= 2)" in out
    val1_row = next(line for line in out.splitlines() if line.startswith(f"| {train_bench.LABELS['val1']} "))
    assert "not sampled" in val1_row
    eager_row = next(
        line for line in out.splitlines() if line.startswith(f"| {train_bench.LABELS['eager']} ")
    )
    assert "not sampled" not in eager_row and "100.0" in eager_row
    assert "ckpt200: 2 step checkpoints in epochs >= 2, 0.030 s each, 0.30% of those epochs' time" in out
    assert "target val2/val1 validation seconds <= 0.6: missed (0.625)" in out
    assert "target ckpt200/eager steady >= 0.95: met (0.990)" in out


class _Chosen(Exception):
    """Raised by the stand-in benchmark with the modes the command chose (nothing is run)."""


def _raise_modes(**kwargs):
    raise _Chosen(tuple(kwargs["modes"]))


def test_bench_train_runs_its_three_baselines_unless_large_run_modes_are_named(monkeypatch) -> None:
    monkeypatch.setattr("mm_ray.bench.runner.bench_train", _raise_modes)
    for argv, modes in [
        (["bench", "train"], ("plain", "ray1", "ray2")),  # not the 6 large-run modes (compile takes minutes)
        (["bench", "train", "--modes", "eager,compiled"], ("eager", "compiled")),
        (["bench", "train", "--source", "shards"], ("loader", "stream1", "stream1e", "ray1")),
    ]:
        try:
            main(argv)
        except _Chosen as chosen:
            assert chosen.args[0] == modes, argv
        else:
            raise AssertionError(f"{argv}: the benchmark was not called")

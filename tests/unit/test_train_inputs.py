"""Which data a run trains on, and the errors that name the key before any Ray or data work starts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mm_ray.config.load import ConfigError, load_config
from mm_ray.data.cache import row_bytes
from mm_ray.data.stages import DroppingColumns
from mm_ray.train.inputs import train_inputs


def test_no_cache_and_no_shards_names_both_keys() -> None:
    with pytest.raises(ConfigError, match=r"train\.cache.*data\.shards"):
        train_inputs(load_config(None, []))


def test_streaming_without_num_classes_fails_naming_the_key(tmp_path) -> None:
    # Raised before the shards are opened (the path does not even exist).
    cfg = load_config(None, [f"data.shards=[{tmp_path / 'missing-*.tar'}]"])
    with pytest.raises(ConfigError, match=r"model\.num_classes"):
        train_inputs(cfg)


def test_a_missing_cache_names_its_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"train\.cache"):
        train_inputs(load_config(None, [f"train.cache={tmp_path / 'nope'}"]))


def test_row_bytes_counts_every_model_ready_column() -> None:
    # 3x4x4 uint8 image, 5 int32 ids + 5 int8 mask, 2x3 float32 audio, int64 label, three bool flags.
    assert row_bytes({"image": [3, 4, 4], "input_ids": [5], "audio": [2, 3]}) == 48 + 25 + 24 + 8 + 3


class _Upper:
    """A stand-in stage with the stage constructor shape (ledger first), yielding two blocks."""

    def __init__(self, ledger, *, column: str):
        self.column = column

    def __call__(self, table: pa.Table):
        yield table
        yield table.slice(0, 1)


def test_dropping_columns_removes_them_from_every_block_of_the_wrapped_stage() -> None:
    stage = DroppingColumns(None, stage=_Upper, drop=("__key__", "absent"), column="x")
    table = pa.table({"__key__": ["a", "b"], "x": [1, 2]})
    blocks = list(stage(table))
    assert [b.column_names for b in blocks] == [["x"], ["x"]]
    assert [b.num_rows for b in blocks] == [2, 1]


def test_a_run_with_no_storage_yet_has_finished_no_epoch(tmp_path) -> None:
    from mm_ray.train.resume import finished_epochs, run_storage

    cfg = load_config(None, [f"output_dir={tmp_path}", "name=fresh", "train.num_workers=1"])
    assert run_storage(cfg) == f"{tmp_path.resolve()}/fresh"
    assert finished_epochs(cfg) == 0
    (tmp_path / "fresh").mkdir()  # a folder without Ray Train's checkpoint snapshot: nothing to resume
    assert finished_epochs(cfg) == 0

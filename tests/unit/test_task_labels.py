"""Task labels as the reader sees them: tag sets and float targets from ``.cls`` members and JSON fields, bad ones
quarantined naming the field; the label column they make; the manifest's task record; the checkpoint config."""

from __future__ import annotations

import json
import tarfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from cachekit import SUMMARY

from mm_ray import columns as C
from mm_ray.config.load import ConfigError, load_config
from mm_ray.data.datasource import raw_schema, rows_to_table
from mm_ray.data.labels import read_tag_names, with_classes, with_target_stats
from mm_ray.data.manifest import CacheManifest, PreprocessingRecord, TaskRecord, cache_manifest
from mm_ray.data.members import MemberMap, assemble, member_map
from mm_ray.data.raw import RawSample
from mm_ray.quarantine import Reason
from mm_ray.tasks import TargetStats
from mm_ray.train.spec import with_preprocessing

TAGS = MemberMap(task="multilabel", label_names=("cat", "dog", "outdoor"), tag_separator="|")
TARGETS = MemberMap(task="regression", targets=("age", "price"))
ONE_TARGET = MemberMap(task="regression")


def run(members: dict[str, bytes], member_map: MemberMap):
    return assemble(RawSample("s.tar", "k", {"txt": b"a caption", **members}), member_map)


def test_tags_from_a_label_member_and_a_json_list():
    row, records = run({"cls": b" dog | outdoor \n"}, TAGS)
    assert records == [] and row[C.LABEL].tolist() == [0.0, 1.0, 1.0]
    row, _ = run({"json": json.dumps({"label": ["cat"]}).encode()}, TAGS)
    assert row[C.LABEL].tolist() == [1.0, 0.0, 0.0] and row[C.LABEL].dtype == np.float32
    row, _ = run({"json": json.dumps({"label": "cat|dog"}).encode()}, TAGS)
    assert row[C.LABEL].tolist() == [1.0, 1.0, 0.0]
    row, _ = run({"cls": b""}, TAGS)  # an explicit empty set: no tag
    assert row[C.LABEL].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("members", "reason", "detail"),
    [
        ({"cls": b"dog|horse"}, Reason.UNKNOWN_LABEL, "'horse'"),
        ({"json": b'{"label": 3}'}, Reason.BAD_LABEL, "JSON field 'label'"),
        ({"json": b'{"label": ["cat", 2]}'}, Reason.BAD_LABEL, "JSON field 'label'"),
        ({"cls": b"\xff\xfe"}, Reason.BAD_LABEL, "not valid UTF-8"),
        ({"json": b'{"caption": "x"}'}, Reason.MISSING_LABEL, "no label"),
    ],
)
def test_bad_tag_sets_are_quarantined_naming_the_field(members, reason, detail):
    row, records = run(members, TAGS)
    assert row is None and [r.reason for r in records] == [reason]
    assert detail in records[0].detail


def test_targets_from_json_fields_and_a_label_member():
    row, records = run({"json": b'{"age": 31, "price": "2.5e3"}'}, TARGETS)
    assert records == [] and row[C.LABEL].tolist() == [31.0, 2500.0]
    row, _ = run({"cls": b" -4.25\n"}, ONE_TARGET)
    assert row[C.LABEL].tolist() == [-4.25]
    row, _ = run({"json": b'{"label": 7}'}, ONE_TARGET)
    assert row[C.LABEL].tolist() == [7.0]


@pytest.mark.parametrize(
    ("members", "member_map", "detail"),
    [
        ({"json": b'{"age": "old", "price": 1}'}, TARGETS, "JSON field 'age' is not a number"),
        ({"json": b'{"age": 3}'}, TARGETS, "JSON field 'price' is missing"),
        ({"json": b'{"age": true, "price": 1}'}, TARGETS, "JSON field 'age' is not a number"),
        ({"json": b'{"age": [1], "price": 1}'}, TARGETS, "JSON field 'age' is not a number"),
        ({"cls": b"inf"}, ONE_TARGET, "label member is not a finite"),
        ({"cls": b"1e39"}, ONE_TARGET, "label member is not a finite"),
        ({"cls": b"twelve"}, ONE_TARGET, "label member is not a number"),
    ],
)
def test_bad_targets_are_quarantined_naming_the_field(members, member_map, detail):
    row, records = run(members, member_map)
    assert row is None and [r.reason for r in records] == [Reason.BAD_LABEL]
    assert detail in records[0].detail


def test_vector_labels_make_a_tensor_column_and_unlabelled_rows_are_nan():
    unlabelled = MemberMap(task="regression", targets=("age", "price"), label_required=False)
    rows = [run({"json": b'{"age": 1, "price": 2}'}, unlabelled)[0], run({}, unlabelled)[0]]
    table = rows_to_table(rows, raw_schema(unlabelled.modalities, unlabelled.label_width))
    values = np.stack(table.column(C.LABEL).combine_chunks().to_numpy())
    assert values.shape == (2, 2) and values[0].tolist() == [1.0, 2.0] and np.isnan(values[1]).all()


def _shard(path: Path, samples: dict[str, dict[str, bytes]]) -> str:
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, BytesIO(data))
    return str(path)


def test_the_tag_map_is_the_sorted_union_of_the_training_tags(tmp_path):
    shard = _shard(
        tmp_path / "train-0.tar",
        {
            "a": {"txt": b"x", "cls": b"zebra,cat"},
            "b": {"txt": b"x", "json": b'{"label": ["ant", "cat"]}'},
            "c": {"txt": b"x", "json": b'{"label": 5}'},  # bad: skipped here, quarantined at ingest
        },
    )
    cfg = load_config(None, ["task.kind=multilabel"])
    assert with_classes(cfg, [shard]).data.classes == ["ant", "cat", "zebra"]
    assert read_tag_names([shard], member_map(load_config(None, [])), ",") == ["ant", "cat", "zebra"]
    with pytest.raises(ConfigError, match=r"task\.kind=multilabel"):
        member_map(cfg)  # no tag map yet


def test_target_stats_come_from_the_training_shards(tmp_path):
    shard = _shard(
        tmp_path / "train-0.tar",
        {
            f"k{i}": {"txt": b"x", "json": json.dumps({"age": age}).encode()}
            for i, age in enumerate([2, 4, 9])
        },
    )
    cfg = with_target_stats(load_config(None, ["task.kind=regression", "task.targets=[age]"]), [shard])
    assert cfg.task.target_mean == pytest.approx([5.0])
    assert cfg.task.target_std == pytest.approx([np.std([2, 4, 9])])
    fixed = load_config(None, ["task.kind=regression", "task.target_mean=[1.0]", "task.target_std=[2.0]"])
    assert with_target_stats(fixed, [shard]) is fixed


def test_the_manifest_records_the_task_and_the_checkpoint_config_gets_it():
    cfg = load_config(
        None,
        [
            "task.kind=regression",
            "task.targets=[age,price]",
            "task.target_mean=[30,2]",
            "task.target_std=[9,1.5]",
        ],
    )
    made = cache_manifest(cfg, {**SUMMARY, "shards": 1, "pools": "p"}, ["a.tar"], "{}", 1.0)
    again = CacheManifest.from_json(made.to_json())
    assert again == made
    assert again.preprocess.task == TaskRecord(
        "regression", ("age", "price"), ",", TargetStats((30, 2), (9, 1.5))
    )
    resolved = with_preprocessing(load_config(None, []), again.preprocess)
    assert resolved.task.kind == "regression" and resolved.task.targets == ["age", "price"]
    assert resolved.task.target_mean == [30.0, 2.0] and resolved.task.target_std == [9.0, 1.5]
    # A classification manifest has no task record: the layout of every older cache.
    plain = cache_manifest(
        load_config(None, []), {**SUMMARY, "shards": 1, "pools": "p"}, ["a.tar"], "{}", 1.0
    )
    assert "task" not in json.loads(plain.to_json())["preprocess"]
    assert PreprocessingRecord.from_dict(json.loads(plain.to_json())["preprocess"]).task is None


def test_a_multilabel_manifest_keeps_the_tag_map_without_turning_on_named_labels():
    cfg = load_config(None, ["task.kind=multilabel", "data.classes=[cat,dog]"])
    made = cache_manifest(cfg, {**SUMMARY, "shards": 1, "pools": "p"}, ["a.tar"], "{}", 1.0)
    resolved = with_preprocessing(load_config(None, []), CacheManifest.from_json(made.to_json()).preprocess)
    assert resolved.task.kind == "multilabel" and resolved.data.classes == ["cat", "dog"]
    assert resolved.data.labels == "integer"

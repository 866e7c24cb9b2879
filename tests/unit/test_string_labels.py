"""String labels (``data.labels=names``): the label map built from the training shards (sorted, deterministic),
ids by position, unknown labels quarantined as ``unknown_label``; integer labels unchanged. Also the README's two
"Your own shards" layouts, generated as real tar files, read with the documented settings (no Ray here: the
Ray run of the same commands is in tests/integration/test_own_shards.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shardkit import write_audio_caption_layout, write_img2dataset_layout, write_samples

from mm_ray import columns as C
from mm_ray.config.load import ConfigError, load_config
from mm_ray.data.labels import read_label_names, with_classes
from mm_ray.data.members import MemberMap, assemble, member_map
from mm_ray.data.raw import RawSample
from mm_ray.data.tar_stream import iter_shard
from mm_ray.quarantine import Reason

IMG2DATASET = ["data.labels=names", "data.members.json_label_field=category", "model.modalities=[image,text]"]
"""The README's settings for the img2dataset-style layout."""
AUDIO_CAPTIONS = ["data.labels=names", "model.modalities=[text,audio]"]
"""The README's settings for the audio-caption layout."""


def _assemble(members: dict[str, bytes], mapping: MemberMap):
    return assemble(RawSample("s.tar", "k", members), mapping)


def _rows(shard_dir: Path, mapping: MemberMap) -> tuple[dict[str, int], list]:
    labels, records = {}, []
    for path in sorted(shard_dir.glob("*.tar")):
        for item in iter_shard(str(path), members=mapping):
            if isinstance(item, RawSample):
                row, notes = assemble(item, mapping)
                records += notes
                if row is not None:
                    labels[row[C.KEY]] = row[C.LABEL]
            else:
                records.append(item)
    return labels, records


def test_names_map_to_their_position_and_unknown_ones_are_quarantined() -> None:
    mapping = MemberMap(label_names=("cat", "dog", "owl"), json_label_field="category")
    assert _assemble({"txt": b"x", "cls": b" dog\n"}, mapping)[0][C.LABEL] == 1
    assert _assemble({"txt": b"x", "json": b'{"category": "owl"}'}, mapping)[0][C.LABEL] == 2
    row, records = _assemble({"txt": b"x", "cls": b"zebra"}, mapping)
    assert row is None and [r.reason for r in records] == [Reason.UNKNOWN_LABEL]
    assert "zebra" in records[0].detail
    for bad in ({"cls": b"\xff\xfe"}, {"cls": b"  "}, {"json": b'{"category": [1]}'}, {"cls": b"x" * 500}):
        row, records = _assemble({"txt": b"x", **bad}, mapping)
        assert row is None and [r.reason for r in records] == [Reason.BAD_LABEL], bad


def test_integer_labels_are_unchanged_and_a_name_there_is_a_bad_label() -> None:
    assert _assemble({"txt": b"x", "cls": b"7"}, MemberMap())[0][C.LABEL] == 7
    row, records = _assemble({"txt": b"x", "cls": b"cat"}, MemberMap())
    assert row is None and [r.reason for r in records] == [Reason.BAD_LABEL]
    assert "data.labels=names" in records[0].detail


def test_the_label_map_is_sorted_and_the_same_in_any_shard_order(tmp_path: Path) -> None:
    write_samples(
        tmp_path / "a.tar", {"k1": {"txt": b"x", "cls": b"zebra"}, "k2": {"txt": b"y", "cls": b"Ant"}}
    )
    write_samples(
        tmp_path / "b.tar",
        {
            "k3": {"txt": b"x", "json": json.dumps({"label": "mole"}).encode()},
            "k4": {"txt": b"x", "cls": b"\xff bad"},  # skipped: the ingest quarantines it later
            "k5": {"txt": b"x", "cls": b"ant"},
            "k6": {"jpg": b"never read", "cls": b"zebra"},
        },
    )
    urls = [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]
    expected = ["Ant", "ant", "mole", "zebra"]  # code-point order: capitals first
    assert read_label_names(urls, MemberMap()) == expected
    assert read_label_names(urls[::-1], MemberMap()) == expected


def test_with_classes_prefers_explicit_classes_and_refuses_shards_without_labels(tmp_path: Path) -> None:
    write_samples(tmp_path / "a.tar", {"k1": {"txt": b"x", "cls": b"b"}, "k2": {"txt": b"y", "cls": b"a"}})
    cfg = load_config(None, ["data.labels=names"])
    assert with_classes(cfg, [str(tmp_path)]).data.classes == ["a", "b"]
    given = load_config(None, ["data.labels=names", "data.classes=[b, a, c]"])
    assert with_classes(given, [str(tmp_path)]).data.classes == ["b", "a", "c"]
    integers = load_config(None, [])
    assert with_classes(integers, [str(tmp_path)]) is integers
    write_samples(tmp_path / "none" / "n.tar", {"k": {"txt": b"x"}})
    with pytest.raises(ConfigError, match="no label found"):
        with_classes(cfg, [str(tmp_path / "none")])
    with pytest.raises(ConfigError, match=r"data\.classes"):
        member_map(cfg)  # names mode without a map: refused rather than quarantining everything


@pytest.mark.parametrize(
    ("writer", "overrides"),
    [(write_img2dataset_layout, IMG2DATASET), (write_audio_caption_layout, AUDIO_CAPTIONS)],
    ids=["img2dataset", "audio_captions"],
)
def test_readme_layouts_read_with_the_documented_settings(tmp_path: Path, writer, overrides) -> None:
    truth = writer(tmp_path / "train", samples=16)
    cfg = with_classes(load_config(None, overrides), [str(tmp_path / "train")])
    # Independently of the code: the distinct labels written, in Python's string order.
    classes = sorted(set(truth.values()))
    assert cfg.data.classes == classes
    labels, records = _rows(tmp_path / "train", member_map(cfg))
    assert records == []
    assert labels == {key: classes.index(name) for key, name in truth.items()}
    # Held-out shards with a label training never saw: those samples alone are quarantined as unknown_label.
    unseen = writer(tmp_path / "val", samples=6, offset=100)
    first = next(iter(unseen))
    _relabel(tmp_path / "val", first, "never seen")
    labels, records = _rows(tmp_path / "val", member_map(cfg))
    assert [(r.key, r.reason) for r in records] == [(first, Reason.UNKNOWN_LABEL)]
    assert labels == {k: classes.index(v) for k, v in unseen.items() if k != first}


def _relabel(shard_dir: Path, key: str, label: str) -> None:
    """Rewrite the shard holding ``key`` with ``label`` as its label (cls member or JSON category)."""
    from shardkit import read_tar_samples

    for path in shard_dir.glob("*.tar"):
        samples = read_tar_samples(path)
        if key not in samples:
            continue
        members = samples[key]
        if "cls" in members:
            members["cls"] = label.encode()
        else:
            meta = json.loads(members["json"])
            members["json"] = json.dumps({**meta, "category": label}).encode()
        write_samples(path, samples)


def test_per_class_accuracy_is_reported_by_class_name() -> None:
    import torch

    from mm_ray.train.metrics import ClassMetrics, format_class_table

    meter = ClassMetrics()
    # Class 0: 2 of 3 right; class 1: never seen; class 2: 1 of 1 right (two batches).
    meter.update(torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0]]), torch.tensor([0, 0, 0]))
    meter.update(torch.tensor([[0, 0, 5.0]]), torch.tensor([2]))
    rows = meter.result(["Ant", "bee", "cat"])
    assert rows == [
        {"class": "Ant", "id": 0, "samples": 3, "accuracy": 2 / 3},
        {"class": "cat", "id": 2, "samples": 1, "accuracy": 1.0},
    ]
    table = format_class_table(rows)
    assert "Ant" in table and "cat" in table and "0.6667" in table
    assert [r["class"] for r in meter.result()] == ["0", "2"]  # integer labels: the ids

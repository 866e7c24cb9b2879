"""Typed records with one writer and one reader each: the cache manifest (with its preprocessing and ingest
records), the encoder spec and the benchmarks' results round-trip, refuse a field they do not know by its name,
and read every older layout (``tests/fixtures/cache_manifests``: written by the code of each layout). Trial
records: ``test_tune_results.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cachekit import SUMMARY, a_manifest

from mm_ray.bench.records import (
    BenchModel,
    GenerationBench,
    GenerationRow,
    GeneratorTraining,
    IngestBench,
    IngestRun,
    ProcessPeak,
    StartupParts,
    StreamMemoryBench,
    StreamMemoryRun,
    TrainBench,
    TrainRun,
)
from mm_ray.config.load import load_config
from mm_ray.data.cache import MANIFEST, Cache, CacheError
from mm_ray.data.manifest import CacheManifest, IngestRecord, PreprocessingRecord, cache_manifest
from mm_ray.models.pretrained.backbones import HF_AUDIO, HF_TEXT, TORCHVISION_IMAGE
from mm_ray.models.pretrained.encoder_spec import EncoderSpec, FeatureStats
from mm_ray.models.spec import ModelSpec
from mm_ray.records import RecordError
from mm_ray.train.spec import with_preprocessing

LAYOUTS = Path(__file__).parents[1] / "fixtures" / "cache_manifests"


def _layout(name: str) -> dict:
    return json.loads((LAYOUTS / name).read_text())


# ------------------------------------------------------------------------------------------ cache manifest


@pytest.mark.parametrize(
    "overrides",
    [(), ("data.labels=names", "data.classes=[cat,dog]", "image.size=32"), ("data.modalities=[image,text]",)],
)
def test_a_manifest_reads_back_as_written(overrides: tuple[str, ...]) -> None:
    cfg = load_config(None, list(overrides))
    made = cache_manifest(cfg, {**SUMMARY, "shards": 1, "pools": "p"}, ["a.tar", "b.tar"], "{}", 2.5,
                          label_counts={"0": 3, "1": 1})  # fmt: skip
    text = made.to_json()
    assert CacheManifest.from_json(text) == made
    # The file is plain JSON a person (or another tool) reads: the counts and shapes under their names.
    saved = json.loads(text)
    assert saved["samples_ok"] == 4 and saved["shards"] == ["a.tar", "b.tar"] and saved["seconds"] == 2.5
    assert saved["shapes"]["input_ids"] == [cfg.text.max_length] == saved["shapes"]["attention_mask"]
    assert saved["ingest"]["samples_per_s"] == round(4 / 2.5, 1) and saved["label_counts"] == {"0": 3, "1": 1}
    assert sorted(saved["preprocess"]["modalities"]) == sorted(
        cfg.data.modalities or ["image", "text", "audio"]
    )


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ((), "colour"),
        (("preprocess",), "labels_map"),
        (("ingest",), "gpu_seconds"),
        (("preprocess",), "image"),
    ],
)
def test_a_manifest_field_the_reader_does_not_know_is_refused_by_name(
    where: tuple[str, ...], field: str
) -> None:
    data = a_manifest().to_dict()
    node = data
    for key in where:
        node = node[key]
    node[field] = 1
    with pytest.raises(RecordError, match=rf"unknown field\(s\) \['{field}'\]"):
        CacheManifest.from_dict(data)


def test_a_manifest_without_a_field_it_needs_names_it() -> None:
    data = a_manifest().to_dict()
    del data["shapes"], data["samples_ok"]
    with pytest.raises(RecordError, match=r"missing field\(s\) \['samples_ok', 'shapes'\]"):
        CacheManifest.from_dict(data)


def test_a_cache_whose_manifest_is_not_one_this_version_reads_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({**a_manifest().to_dict(), "rows_by_colour": {}}))
    with pytest.raises(CacheError, match=r"manifest.json: not a manifest .*\['rows_by_colour'\]"):
        Cache.open(str(tmp_path))


@pytest.mark.parametrize(
    "name",
    ["1_first.json", "2_ingest_and_label_counts.json", "3_string_labels.json", "4_modalities.json"],
)
def test_every_older_manifest_layout_reads(name: str, tmp_path: Path) -> None:
    saved = _layout(name)
    (tmp_path / MANIFEST).write_text(json.dumps(saved))
    cache = Cache.open(str(tmp_path))
    m = cache.manifest
    assert (m.samples_ok, m.samples_read, m.samples_quarantined) == (3, 4, 1)
    assert m.quarantine_reasons == {"bad_image": 1} and m.shards == ("/data/train-000.tar",)
    # The text mask has the ids' shape (the first layout left it out).
    assert cache.shapes["attention_mask"] == cache.shapes["input_ids"] == [32]
    assert cache.shapes["image"] == [3, 224, 224] and cache.shapes["audio"] == [64, 101]
    counted = "label_counts" in saved
    assert (m.ingest is not None, m.label_counts is not None) == (counted, counted)
    assert cache.num_classes == (2 if counted else None)
    # What the rows were made with replaces a training run's own settings.
    run = load_config(None, ["image.size=64", "image.resize=stretch", "text.max_length=8", "audio.n_mels=16"])
    cfg = with_preprocessing(run, cache.preprocessing)
    assert (cfg.image.size, cfg.image.resize, cfg.text.max_length, cfg.audio.n_mels) == (224, "crop", 32, 64)
    assert (cfg.data.labels, cfg.data.classes) == (
        ("names", ["cat", "dog"]) if name[0] == "3" else ("integer", [])
    )
    # Only the current layout says which modalities the data holds; before, the run's own setting stands.
    assert cfg.data.modalities == (["image", "text", "audio"] if name[0] == "4" else None)


def test_a_first_layout_record_with_a_section_of_no_layout_is_refused() -> None:
    record = {**_layout("1_first.json")["preprocess"], "video": {"fps": 4}}
    with pytest.raises(RecordError, match=r"preprocess: unknown field\(s\) \['video'\]"):
        PreprocessingRecord.from_dict(record)


def test_the_ingest_record_keeps_the_runs_counts_and_rate() -> None:
    summary = {**SUMMARY, "samples_read": 10, "shards_unreadable": ["x.tar"], "quarantine_records": 0}
    record = IngestRecord.of_run(summary, seconds=4.0)
    assert record.samples_per_s == 2.5 and record.shards_unreadable == ("x.tar",)
    assert IngestRecord.from_dict(record.to_dict()) == record


# ------------------------------------------------------------------------------------------- encoder spec

SPECS = {
    "image": EncoderSpec(source="torchvision", kind=TORCHVISION_IMAGE, pool="avg", arch="resnet18", path="r.pt",
                         mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2), freeze=True, unfreeze_after=2),
    "text": EncoderSpec(source="transformers", kind=HF_TEXT, pool="mean", path="bert",
                        hf_config={"model_type": "bert", "hidden_size": 32}),
    "audio": EncoderSpec(source="transformers", kind=HF_AUDIO, pool="cls", path="ast",
                         hf_config={"model_type": "audio-spectrogram-transformer"},
                         feature_stats=FeatureStats(mean=-4.0, std=4.5, do_normalize=False)),
}  # fmt: skip


@pytest.mark.parametrize("modality", sorted(SPECS))
def test_an_encoder_spec_reads_back_as_written(modality: str) -> None:
    spec = SPECS[modality]
    saved = spec.to_dict()
    assert json.loads(json.dumps(saved)) == saved  # plain data: what a weights-only checkpoint holds
    assert EncoderSpec.from_dict(saved, modality) == spec


def test_an_encoder_spec_field_the_reader_does_not_know_is_refused_by_name() -> None:
    with pytest.raises(RecordError, match=r"encoder spec of 'text': unknown field\(s\) \['remote_code'\]"):
        EncoderSpec.from_dict({**SPECS["text"].to_dict(), "remote_code": "x.py"}, "text")


def test_an_encoder_spec_of_the_first_layout_reads() -> None:
    """Before backbone kinds, a spec's kind was its modality's, and an AST's statistics were ``features``."""
    first = {
        "image": {"source": "torchvision", "freeze": True, "unfreeze_after": 2, "arch": "resnet18",
                  "path": "r.pt", "pool": "avg", "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
        "text": {"source": "transformers", "freeze": False, "unfreeze_after": None, "path": "bert",
                 "pool": "mean", "hf_config": {"model_type": "bert", "hidden_size": 32}},
        "audio": {"source": "transformers", "freeze": False, "unfreeze_after": None, "path": "ast", "pool": "cls",
                  "hf_config": {"model_type": "audio-spectrogram-transformer"},
                  "features": {"mean": -4.0, "std": 4.5, "do_normalize": False}},
    }  # fmt: skip
    assert {m: EncoderSpec.from_dict(saved, m) for m, saved in first.items()} == SPECS


def test_an_encoder_spec_as_checkpoints_before_the_record_saved_it_reads() -> None:
    """The layout with ``kind``, each backbone writing only its own fields (what checkpoints hold today)."""
    saved = {
        "image": {"source": "torchvision", "freeze": True, "unfreeze_after": 2, "kind": TORCHVISION_IMAGE,
                  "arch": "resnet18", "path": "r.pt", "pool": "avg", "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
        "audio": {"source": "transformers", "freeze": False, "unfreeze_after": None, "kind": HF_AUDIO, "path": "ast",
                  "pool": "cls", "hf_config": {"model_type": "audio-spectrogram-transformer"},
                  "feature_stats": {"mean": -4.0, "std": 4.5, "do_normalize": False}},
    }  # fmt: skip
    assert {m: EncoderSpec.from_dict(s, m) for m, s in saved.items()} == {m: SPECS[m] for m in saved}


def test_a_model_spec_keeps_its_encoder_specs_typed_through_a_checkpoint() -> None:
    spec = ModelSpec(preset="late_concat", modalities=("image", "text"), num_classes=3,
                     shapes={"image": (3, 8, 8), "input_ids": (4,), "attention_mask": (4,)},
                     encoders={m: SPECS[m] for m in ("image", "text")})  # fmt: skip
    saved = spec.as_dict()
    assert saved["encoders"]["image"]["arch"] == "resnet18" and saved["encoders"]["text"]["pool"] == "mean"
    assert ModelSpec.from_dict(saved) == spec
    with pytest.raises(RecordError, match=r"model spec: unknown field\(s\) \['optimizer'\]"):
        ModelSpec.from_dict({**saved, "optimizer": "adam"})


# ---------------------------------------------------------------------------------------- benchmark results


def _train_run(rate: float, parts: StartupParts | None = None) -> TrainRun:
    return TrainRun(epochs=3, samples=300, epoch_seconds=(2.0, 1.0, 1.0), steady_samples_per_s=rate,
                    startup_s=4.5, seconds=9.0, samples_per_s=33.3, torch_threads=2, peak_pss_mb=812.5,
                    cpu_s_by_process={"driver": 3.1, "ray::RayTrainWorker": 9.0}, startup_parts=parts,
                    ray_start_s=2.0 if parts else None, workers=1 if parts else None)  # fmt: skip


BENCH_SUMMARIES = [
    IngestBench(cores=2, shards=8, rounds=2,
                results={"ray": IngestRun(400, 10.0, 3.0, 40.0, 57.1, 900.0, {"driver": 1.0}, ray_start_s=2.5,
                                          pools="fused: 2-2 x 1 CPU", steady_samples_per_s_runs=(57.1, 55.0))},
                ratios={"c/b": 0.9}, ratios_by_round=({"c/b": 0.9}, {"c/b": 0.95})),
    IngestBench(cores=2, shards=8, rounds=1, results={"floor": IngestRun(400, 5.0, 0.0, 80.0, 80.0, 300.0, {})}),
    TrainBench(cores=2, source="cache", cache="runs/bench/train_cache", shards=None, epochs=3,
               model=BenchModel("late_concat", 64, 2), batch_size=64,
               results={"plain": _train_run(100.0), "ray1": _train_run(95.0, StartupParts(6.0, 1.5))},
               ratios={"ray1/plain steady": 0.95}),
    StreamMemoryBench(cores=2, scale=10, memory_ratio=1.1, rss_ratio=1.3, target=1.3,
                      results={"1x": StreamMemoryRun(2000, 60.0, 40.0, 1500.0, 3000.0, ProcessPeak("raylet", 90.0),
                                                     {"raylet": 90.0})}),
    GenerationBench(rows=(GenerationRow("real (val)", 0.9, 1.0, 0.25, 0.3, colour_vs_rendered=0.95),), topics=4,
                    train={"mvae": GeneratorTraining(4, 12.5, {"loss": 0.5})}, grid="g.png", samples=8,
                    grid_rows="per topic: real images, then mvae"),
]  # fmt: skip


@pytest.mark.parametrize("summary", BENCH_SUMMARIES, ids=lambda s: type(s).__name__)
def test_a_benchmark_summary_reads_back_from_its_json(summary) -> None:
    saved = json.loads(json.dumps(summary.to_dict()))  # what `mm-ray bench ... --json` writes
    assert type(summary).from_dict(saved) == summary


def test_what_a_mode_did_not_measure_is_left_out_of_its_json() -> None:
    plain_loop = _train_run(100.0).to_dict()
    assert not {"ray_start_s", "workers", "startup_parts"} & set(plain_loop)
    assert _train_run(95.0, StartupParts(6.0, 1.5)).to_dict()["startup_parts"] == {
        "to_worker_s": 6.0,
        "worker_to_first_batch_s": 1.5,
    }
    assert "ratios" not in BENCH_SUMMARIES[1].to_dict()  # mm_ray's pipeline did not run: nothing compared


def test_a_child_result_with_a_field_the_parent_does_not_know_is_refused_by_name() -> None:
    saved = _train_run(100.0).to_dict()
    with pytest.raises(RecordError, match=r"bench train run: unknown field\(s\) \['gpu_util'\]"):
        TrainRun.from_dict({**saved, "gpu_util": 0.5})
    nested = {**saved, "startup_parts": {"to_worker_s": 1.0, "worker_to_first_batch_s": 1.0, "extra": 1}}
    with pytest.raises(RecordError, match=r"bench train run: startup_parts: unknown field\(s\) \['extra'\]"):
        TrainRun.from_dict(nested)


def test_string_labels_bring_their_label_map_and_the_members_they_were_read_from() -> None:
    made_with = load_config(
        None, ["data.labels=names", "data.classes=[cat,dog]", "data.members.json_label_field=category"]
    )
    saved = json.loads(cache_manifest(made_with, SUMMARY, ["a.tar"], "{}", 1.0).to_json())
    assert saved["preprocess"]["members"]["json_label_field"] == "category"
    record = CacheManifest.from_dict(saved).preprocess
    cfg = with_preprocessing(load_config(None, []), record)
    assert (cfg.data.labels, cfg.data.classes, cfg.data.members.json_label_field) == (
        "names",
        ["cat", "dog"],
        "category",
    )
    # A member field this version does not know is data it cannot honour: refused by name.
    saved["preprocess"]["members"]["xml_label_field"] = "cls"
    with pytest.raises(RecordError, match=r"preprocess: members: unknown field\(s\) \['xml_label_field'\]"):
        CacheManifest.from_dict(saved)

"""A run's saved config takes the preprocessing its cache was made with (what ``mm-ray evaluate`` rebuilds)."""

from __future__ import annotations

from mm_ray.config.load import load_config
from mm_ray.data.manifest import cache_manifest
from mm_ray.train.spec import with_preprocessing

SUMMARY = {"samples_ok": 4, "samples_read": 4, "samples_quarantined": 0, "quarantine_reasons": {}}


def test_the_caches_preprocessing_replaces_the_runs_own() -> None:
    made_with = load_config(
        None, ["image.size=32", "image.resize=stretch", "audio.sample_rate=8000", "text.max_length=12"]
    )
    manifest = cache_manifest(made_with, SUMMARY, ["a.tar"], '{"model": "stand-in"}', seconds=1.0)
    # The training run's config left preprocessing at its defaults (it only reads the cache).
    run = load_config(None, ["model.width=8", "train.lr=0.01"])
    cfg = with_preprocessing(run, manifest.preprocess)
    assert (cfg.image.size, cfg.image.resize) == (32, "stretch")
    assert cfg.audio.sample_rate == 8000 and cfg.text.max_length == 12
    # The rest is the run's: model, training, and text settings other than the length.
    assert cfg.model.width == 8 and cfg.train.lr == 0.01 and cfg.text.vocab_size == run.text.vocab_size


def test_a_manifest_without_preprocessing_leaves_the_config_alone() -> None:
    run = load_config(None, ["image.size=64"])
    assert with_preprocessing(run, None) == run

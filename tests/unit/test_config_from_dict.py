"""``config_from_dict``: a saved (``as_dict``) config comes back as the same Config, with a YAML file and
overrides laid over it, checked like ``load_config``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_ray.config.load import ConfigError, as_dict, config_from_dict, load_config


def test_round_trip_gives_the_same_config() -> None:
    cfg = load_config(None, ["image.size=48", "train.lr_by_modality={text: 0.0001}", "text.tokenizer=null"])
    assert config_from_dict(as_dict(cfg)) == cfg


def test_file_then_overrides_lay_over_the_saved_config(tmp_path: Path) -> None:
    saved = as_dict(
        load_config(None, ["image.size=48", "pools.image.num_cpus=0.7", "pools.image.max_size=3"])
    )
    path = tmp_path / "cluster.yaml"
    path.write_text("pools:\n  image: {num_cpus: 0.2}\nray: {address: auto}\n")
    cfg = config_from_dict(saved, ["ray.address=null", "pools.text.batch_size=16"], path=path)
    assert cfg.pools.image.num_cpus == 0.2  # from the file
    assert cfg.pools.image.max_size == 3  # the file's mapping merged into the saved one, not replacing it
    assert cfg.ray.address is None  # overrides come last
    assert cfg.pools.text.batch_size == 16
    assert cfg.image.size == 48  # untouched saved values survive
    assert saved["pools"]["image"]["num_cpus"] == 0.7  # the input is not modified


def test_errors_name_the_key(tmp_path: Path) -> None:
    saved = as_dict(load_config())
    with pytest.raises(ConfigError, match=r"image\.sise.*did you mean 'image\.size'"):
        config_from_dict(saved, ["image.sise=3"])
    saved["pools"]["image"]["num_cpus"] = "lots"
    with pytest.raises(ConfigError, match=r"pools\.image\.num_cpus: expected a number"):
        config_from_dict(saved)
    with pytest.raises(ConfigError, match="config file not found"):
        config_from_dict(as_dict(load_config()), path=tmp_path / "missing.yaml")


def test_with_keys_sets_dotted_keys_on_a_typed_config_checking_each() -> None:
    from mm_ray.config.load import with_keys

    cfg = load_config(None, ["train.lr_by_modality={text: 0.01}"])
    out = with_keys(
        cfg, {"train.lr": 0.5, "train.lr_by_modality.image": 1, "modalities.settings.depth.size": 8}
    )
    assert out.train.lr == 0.5 and out.train.lr_by_modality == {"text": 0.01, "image": 1.0}
    assert out.modalities.settings == {"depth": {"size": 8}}
    assert out.image is cfg.image and cfg.train.lr != 0.5  # untouched sections are shared; cfg is unchanged
    # Each value is checked like an override of the user's, naming the key.
    with pytest.raises(ConfigError, match=r"train\.lr_by_modality\.image: expected a number, got 'fast'"):
        with_keys(cfg, {"train.lr_by_modality.image": "fast"})
    with pytest.raises(ConfigError, match=r"unknown key 'image\.sise' \(did you mean 'image\.size'\?\)"):
        with_keys(cfg, {"image.sise": 64})
    with pytest.raises(ConfigError, match=r"train\.lr\.x: train\.lr is not a section"):
        with_keys(cfg, {"train.lr.x": 1})

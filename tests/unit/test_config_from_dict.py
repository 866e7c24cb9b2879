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

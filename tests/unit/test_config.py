"""Config schema: YAML + dotted overrides, errors that name the key, every shipped YAML loads."""

from __future__ import annotations

from pathlib import Path

import pytest

import mm_ray
from mm_ray.cli.common import split_overrides
from mm_ray.config.explain import explain
from mm_ray.config.load import ConfigError, as_dict, load_config
from mm_ray.config.schema import Config

PIPELINES = sorted((Path(__file__).parents[2] / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_shipped_pipeline_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.name  # every pipeline names its run


def test_pipelines_exist() -> None:
    assert {p.name for p in PIPELINES} >= {"demo.yaml", "bench_ingest.yaml"}


def test_overrides_apply_with_yaml_types(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("image:\n  size: 96\npools:\n  image: {num_cpus: 0.5}\n")
    cfg = load_config(
        path, ["image.size=128", "pools.image.max_size=3", "data.shards=[a.tar, b.tar]", "ray.address=null"]
    )
    assert cfg.image.size == 128
    assert cfg.pools.image.num_cpus == 0.5 and cfg.pools.image.max_size == 3
    assert cfg.data.shards == ["a.tar", "b.tar"]
    assert cfg.ray.address is None
    assert cfg.pools.text.num_cpus == Config().pools.text.num_cpus  # untouched defaults survive


def test_int_is_accepted_for_float_and_converted() -> None:
    cfg = load_config(None, ["data.error_budget=0"])
    assert cfg.data.error_budget == 0.0 and isinstance(cfg.data.error_budget, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("image.sise=3", "unknown key 'image.sise' (did you mean 'image.size'?)"),
        ("pools.image.num_cpus=lots", "pools.image.num_cpus: expected a number"),
        ("image.size=1.5", "image.size: expected an integer"),
        ("image.size=true", "image.size: expected an integer"),
        ("image.resize=zoom", "image.resize: expected one of"),
        ("data.required_modalities=[video]", "data.required_modalities[0]: expected one of"),
        ("data.shards=a.tar", "data.shards: expected a list"),
        ("image=3", "image: expected a mapping"),
        ("nokey", "not of the form key=value"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    # mm_ray.load_config: the schema's checks, then the names (modalities, presets) against the run's own.
    with pytest.raises(ConfigError) as err:
        mm_ray.load_config(None, [override])
    assert message in str(err.value)


def test_unknown_key_in_yaml_names_full_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pools:\n  audio:\n    num_cpu: 1\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'pools\.audio\.num_cpu' \(did you mean 'pools\.audio\.num_cpus'\?\)"
    ):
        load_config(path)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_round_trip_through_dict(tmp_path: Path) -> None:
    import yaml

    cfg = load_config(None, ["image.size=64", "data.members.json_text_field=text"])
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(as_dict(cfg)))
    assert load_config(path) == cfg


def test_every_field_has_a_docstring() -> None:
    rows = explain()
    missing = [key for key, _default, doc in rows if not doc]
    assert not missing, f"fields without a docstring: {missing}"
    assert any(key == "pools.image.num_cpus" for key, _, _ in rows)


def test_split_overrides_keeps_paths_with_equals() -> None:
    words = ["data/split=train/x.tar", "image.size=64", "s3://b/k=v/*.tar", "name=x"]
    rest, overrides = split_overrides(words)
    assert rest == ["data/split=train/x.tar", "s3://b/k=v/*.tar"]
    assert overrides == ["image.size=64", "name=x"]


def test_nested_override_keeps_section_defaults() -> None:
    cfg = load_config(None, ["pools.image.min_size=1"])
    assert cfg.pools.image.min_size == 1
    # The image pool's own default, not PoolConfig's generic default.
    assert cfg.pools.image.num_cpus == Config().pools.image.num_cpus

"""The library's contracts: closed vocabularies equal their registries, configs are frozen, the typed loop
config round-trips, the public API resolves, and the house has no arrow from the library up into the CLI."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

import mm_ray
from mm_ray.config.load import ConfigError
from mm_ray.config.schema import FUSION_PRESET_NAMES, TextEncoderName
from mm_ray.models import FUSION_PRESETS, PRESETS, TEXT_ENCODERS, ModelSpec
from mm_ray.settings import load_config
from mm_ray.train.spec import LoopConfig, read_loop_config

PACKAGE = Path(mm_ray.__file__).parent


def test_closed_vocabularies_are_exactly_the_registries() -> None:
    assert tuple(FUSION_PRESETS) == FUSION_PRESET_NAMES
    assert typing.get_args(TextEncoderName) == TEXT_ENCODERS
    # One unimodal baseline per built-in modality, then the fusion presets.
    assert list(PRESETS) == [f"unimodal_{m}" for m in ("image", "text", "audio", "features")] + list(
        FUSION_PRESETS
    )


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.preset=gatd", "model.preset"),
        ("model.text_encoder=gru", "model.text_encoder"),
        ("train.lr_by_modality={txt: 0.1}", "train.lr_by_modality.txt"),
        ("model.fusion_weights={video: 1.0}", "model.fusion_weights.video"),
        ("embed.pairs=[image->video]", "embed.pairs[0]"),
        ("data.modalities=[image, imgae]", "data.modalities"),
        ("model.modalities=[image, features]", "model.modalities[1]"),
        ("demo.sweep_presets=[film, nope]", "demo.sweep_presets[1]"),
    ],
)
def test_an_unknown_name_fails_when_the_config_is_loaded_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(f"{key}: expected one of")


def test_a_bad_preset_fails_on_the_driver_before_ray_starts(capsys) -> None:
    import ray

    from mm_ray.cli.main import main

    assert main(["train", "model.preset=gatd", "train.cache=/nowhere"]) == 2
    assert "config error: model.preset: expected one of" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_configs_are_frozen() -> None:
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.storage_path = "elsewhere"  # type: ignore[misc]
    changed = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, storage_path="elsewhere"))
    assert changed.train.storage_path == "elsewhere" and cfg.train.storage_path is None


def test_the_loop_config_round_trips_as_plain_data() -> None:
    cfg = load_config(
        None, ["model.preset=film", "train.lr_by_modality={text: 0.0001}", "train.augment.enabled=true"]
    )
    shapes = {"image": [3, 32, 32], "input_ids": [16], "attention_mask": [16], "audio": [20, 51]}
    loop = LoopConfig.for_run(cfg, shapes=shapes, vocab_size=100, num_classes=4, rows=100, has_val=True)
    assert loop.model == ModelSpec(
        preset="film",
        modalities=("image", "text", "audio"),
        num_classes=4,
        shapes={"image": (3, 32, 32), "input_ids": (16,), "attention_mask": (16,), "audio": (20, 51)},
        vocab_size=100,
    )
    # ceil(100 rows / 64) steps x 10 epochs; the warm-up (100) is capped at the run's length.
    assert (loop.total_steps, loop.warmup_steps) == (20, 20)
    state = loop.to_state()
    assert all(isinstance(v, (str, int, float, bool, list, dict, type(None))) for v in state.values())
    assert read_loop_config(state) == loop
    with pytest.raises(ValueError, match="unknown field"):
        read_loop_config({**state, "surprise": 1})
    # Subset dropout waits for its epochs of whole samples.
    scheduled = LoopConfig.for_run(
        load_config(None, ["model.subset_dropout=0.5", "model.subset_dropout_after=3"]),
        shapes=shapes, vocab_size=100, num_classes=4, rows=100, has_val=True,
    )  # fmt: skip
    assert [scheduled.subset_dropout_at(e) for e in range(5)] == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert [loop.subset_dropout_at(e) for e in range(2)] == [0.0, 0.0]
    # Streaming with the crop drawn in the image pools: the batches are not cropped again, the rest stays.
    decoded = LoopConfig.for_run(
        cfg, shapes=shapes, vocab_size=100, num_classes=4, rows=100, has_val=True, cropped_at_decode=True
    )
    assert (loop.augment.crop_min_scale, decoded.augment.crop_min_scale, decoded.augment.crop_max_aspect) == (
        0.6,
        1.0,
        1.0,
    )
    assert decoded.augment.flip == loop.augment.flip and decoded.augment.enabled
    from mm_ray.data.pipeline import preprocessor_kwargs

    assert "random_crop" not in preprocessor_kwargs(cfg, "")["image"]
    augmenting = preprocessor_kwargs(cfg, "", augment=True)
    assert augmenting["image"]["random_crop"] == (0.6, 1.333) and augmenting["audio"]["crop"] == "random"


def test_the_public_api_resolves() -> None:
    for name in mm_ray.__all__:
        assert getattr(mm_ray, name) is not None, name
    with pytest.raises(AttributeError):
        mm_ray.nope  # noqa: B018


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return names


def test_the_library_never_imports_the_cli_and_commands_never_import_each_other() -> None:
    helpers = {"mm_ray.cli.common", "mm_ray.cli.console"}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        imported = [n for n in _imports(path) if n.startswith("mm_ray.cli")]
        if not module.startswith("mm_ray.cli"):
            assert not imported, f"{module} imports {imported}"
        elif module not in ("mm_ray.cli.main", "mm_ray.cli"):
            others = {n for n in imported if n not in helpers and n.rsplit(".", 1)[0] not in helpers}
            assert not others, f"{module} imports the command module(s) {sorted(others)}"


def test_only_public_ray_apis_are_imported() -> None:
    for path in PACKAGE.rglob("*.py"):
        private = [
            n for n in _imports(path) if n.startswith("ray") and any(p.startswith("_") for p in n.split("."))
        ]
        assert not private, f"{path.relative_to(PACKAGE.parent)} imports {private}"


def test_no_test_imports_the_cli_for_library_behaviour() -> None:
    # Tests of the command line itself import mm_ray.cli.main (its parser, exit codes and output) only.
    tests = Path(__file__).parents[1]
    for path in tests.rglob("*.py"):
        imported = {n for n in _imports(path) if n.startswith("mm_ray.cli")}
        assert imported <= {"mm_ray.cli.main", "mm_ray.cli.main.main", "mm_ray.cli.main.parse_args",
                            "mm_ray.cli.common", "mm_ray.cli.common.split_overrides"}, path  # fmt: skip


def test_the_type_checking_block_names_every_public_name_where_it_lives() -> None:
    """IDEs resolve ``mm_ray.fit`` through the facade's ``TYPE_CHECKING`` imports: they must match ``_API``."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING"
    )
    imported = {a.name: node.module for node in block.body for a in node.names}
    assert imported == mm_ray._API

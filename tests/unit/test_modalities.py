"""Modalities as specs: the registry's order and subsets, every table derived from it, the built-in decoders
writing what their specs declare, the ``features`` modality's checks, plug-ins and their trust rule."""

from __future__ import annotations

import ast
import dataclasses
import io
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from depth_plugin import DEPTH, depth_png
from shardkit import audio_bytes, image_bytes

import mm_ray
from mm_ray.config.load import ConfigError, config_from_dict, load_config
from mm_ray.config.schema import Config, EncodersConfig, MembersConfig, PoolsConfig
from mm_ray.data.pipeline import preprocessor_kwargs, stage_order
from mm_ray.modalities import BUILTIN, ColumnSpec, Registry, modalities_of, registry_with, settings_of
from mm_ray.modalities.registry import load_plugin
from mm_ray.models import build_model
from mm_ray.preprocess.tokenizer import train_tokenizer

PACKAGE = Path(mm_ray.__file__).parent
NAMES = ("image", "text", "audio", "features")
PLUGIN = "depth_plugin:DEPTH"


def test_the_registry_holds_the_built_ins_in_one_canonical_order_and_every_subset() -> None:
    assert BUILTIN.names == NAMES
    subsets = BUILTIN.subsets()
    # Independently: every non-empty combination, by size, each in canonical order.
    expected = ["+".join(c) for r in range(1, 5) for c in itertools.combinations(NAMES, r)]
    assert list(subsets) == expected and len(subsets) == 2**4 - 1 == 15
    assert subsets[-1] == BUILTIN.full_subset == "image+text+audio+features"
    assert BUILTIN.canonical_subset("audio+image") == "image+audio"
    three = BUILTIN.only(["audio", "text", "image"])
    assert three.names == ("image", "text", "audio") and len(three.subsets()) == 7
    for bad in ("image+smell", "image+image", ""):
        with pytest.raises(ValueError):
            BUILTIN.parse_subset(bad)
    with pytest.raises(ValueError, match="same column"):
        Registry([BUILTIN["image"], dataclasses.replace(DEPTH, columns=(ColumnSpec("image", "float32"),))])
    with pytest.raises(ValueError, match="distinct"):
        Registry([BUILTIN["image"], BUILTIN["image"]])


def test_no_module_outside_the_modalities_package_names_a_modality() -> None:
    """The modality is the registry's word: nothing else in the library spells one (the demo's data renderer
    draws image, text and audio on purpose and is the one exception)."""
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in ("modalities", "demo"):
            continue
        tree = ast.parse(path.read_text())
        hits += [f"{path.relative_to(PACKAGE)}:{n.lineno}" for n in ast.walk(tree)
                 if isinstance(n, ast.Constant) and n.value in NAMES]  # fmt: skip
    assert hits == []


def test_the_built_in_config_sections_agree_with_their_specs() -> None:
    cfg = Config()
    for spec in BUILTIN:
        assert isinstance(getattr(cfg, spec.name), spec.settings_type)
        assert tuple(getattr(MembersConfig(), spec.name)) == spec.extensions
        assert getattr(PoolsConfig(), spec.name).num_cpus == spec.pool_cpus
        assert spec.name in {f.name for f in dataclasses.fields(EncodersConfig)}
    # The cost shares split a pool's CPUs: image and audio decoding dominate, text and features are cheap.
    shares = {s.name: s.cost_share for s in BUILTIN}
    assert shares["image"] == shares["audio"] > shares["text"] > shares["features"] > 0


def _member(spec_name: str) -> bytes:
    if spec_name == "image":
        return image_bytes(3)
    if spec_name == "text":
        return b"a red bus by the river"
    if spec_name == "audio":
        return audio_bytes(3)
    out = io.BytesIO()
    np.save(out, np.arange(6, dtype=np.float32).reshape(2, 3))
    return out.getvalue()


def test_each_built_in_decoder_writes_exactly_the_columns_its_spec_declares() -> None:
    cfg = load_config(None, ["image.size=24", "audio.duration_s=0.5", "text.max_length=12", "features.shape=[2,3]",
                             "data.modalities=[image,text,audio,features]"])  # fmt: skip
    tokenizer = train_tokenizer(["a red bus by the river"], vocab_size=64).to_str()
    kwargs = preprocessor_kwargs(cfg, tokenizer)
    for spec in modalities_of(cfg):
        out = spec.preprocessor(**kwargs[spec.name])(
            {spec.raw_column: np.array([_member(spec.name), None], object)}
        )
        declared = spec.shapes(settings_of(cfg, spec))
        assert set(out) == {*spec.column_names, spec.presence_column, "__reject__", "__reject_detail__"}
        assert out[spec.presence_column].tolist() == [True, False] and list(out["__reject__"]) == ["", ""]
        for column in spec.columns:
            assert out[column.name].dtype == np.dtype(column.dtype), (spec.name, column.name)
            assert out[column.name].shape == (2, *declared[column.name]), (spec.name, column.name)
            assert not out[column.name][1].any()  # the sample without the member: zeros


def _npy(array: np.ndarray, **kwargs) -> bytes:
    out = io.BytesIO()
    np.save(out, array, **kwargs)
    return out.getvalue()


def test_features_are_read_without_pickle_and_checked_against_shape_and_dtype() -> None:
    spec = BUILTIN["features"]
    pre = spec.preprocessor(shape=(4,), dtype="float32")
    npz = io.BytesIO()
    np.savez(npz, x=np.zeros(4, np.float32))
    members = {
        "good": _npy(np.array([1, 2, 3, 4], np.float32)),
        "float64": _npy(np.zeros(4, np.float64)),
        "shape": _npy(np.zeros((2, 2), np.float32)),
        "pickle": _npy(np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True),
        "npz": npz.getvalue(),
        "nan": _npy(np.array([1, np.nan, 3, 4], np.float32)),
        "text": b"1,2,3,4",
        "cut": _npy(np.arange(4, dtype=np.float32))[:-6],
    }
    out = pre({spec.raw_column: np.array(list(members.values()), dtype=object)})
    reasons = dict(zip(members, out["__reject__"], strict=True))
    details = dict(zip(members, out["__reject_detail__"], strict=True))
    assert reasons == {k: ("" if k == "good" else "bad_features") for k in members}
    assert out[spec.column][0].tolist() == [1, 2, 3, 4] and out[spec.column].dtype == np.float32
    assert not out[spec.column][1:].any() and out[spec.presence_column].tolist() == [True] + [False] * 7
    assert "dtype float64" in details["float64"] and "shape [2, 2]" in details["shape"]
    assert (
        "pickle" in details["pickle"].lower()
        and "NaN" in details["nan"]
        and "no NUMPY magic" in details["text"]
    )
    with pytest.raises(ConfigError, match=r"features\.shape: .* required"):
        modalities_of(load_config(None, ["data.modalities=[image,features]"]))


def test_stages_decode_the_smallest_rows_first() -> None:
    def order(*overrides: str) -> list[str]:
        cfg = load_config(None, list(overrides))
        return [s.name for s in stage_order(cfg, modalities_of(cfg))]

    assert order() == ["text", "audio", "image"]  # 161 B, 26 KB, 150 KB a row
    assert order("image.size=16") == ["text", "image", "audio"]  # 768 B of image now rides before the clips


def test_a_plugin_is_named_in_the_config_and_used_like_a_built_in() -> None:
    cfg = mm_ray.load_config(None, [f"modalities.plugins=[{PLUGIN}]", "data.modalities=[image,depth]",
                                    "modalities.settings={depth: {size: 8}}"])  # fmt: skip
    reg = modalities_of(cfg)
    assert reg.names == ("image", "depth") and reg.subsets() == ("image", "depth", "image+depth")
    assert settings_of(cfg, reg["depth"]).size == 8
    # The default modality set takes every plug-in in: image, text, audio, then depth.
    assert modalities_of(load_config(None, [f"modalities.plugins=[{PLUGIN}]"])).names[-1] == "depth"
    model = build_model("gated", modalities=("image", "depth"), num_classes=3, registry=registry_with((PLUGIN,)),
                        shapes={"image": (3, 16, 16), "depth": (1, 8, 8)}, width=8, depth=1, fusion_dim=8)  # fmt: skip
    depth = DEPTH.preprocessor(size=8, max_depth=10.0)(
        {DEPTH.raw_column: np.array([depth_png(np.ones((8, 8)))] * 2)}
    )
    batch = {"image": torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "depth": torch.from_numpy(depth["depth"])}
    logits = model(batch)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["depth"].parameters())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["modalities.plugins=[no_such_pkg:X]"], r"modalities\.plugins: cannot import 'no_such_pkg'"),
        (["modalities.plugins=[depth_plugin]"], r"expected 'package\.module:NAME'"),
        (["modalities.plugins=[depth_plugin:depth_png]"], r"is not a ModalitySpec"),
        (
            [f"modalities.plugins=[{PLUGIN}]", "modalities.settings={depth: {sise: 8}}"],
            r"unknown key 'modalities\.settings\.depth\.sise' \(did you mean 'modalities\.settings\.depth\.size'\?\)",
        ),
        (["modalities.settings={image: {size: 8}}"], r"modalities\.settings\.image: not a plug-in modality"),
        (["data.modalities=[image, depth]"], r"data\.modalities: expected one of .*, got 'depth'"),
        (["model.preset=unimodal_depth"], r"model\.preset: expected one of"),
    ],
)
def test_plugin_mistakes_are_named_by_key(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        mm_ray.load_config(None, overrides)


def test_a_plugin_may_not_take_a_name_mm_ray_uses() -> None:
    module = type(sys)("clashing_plugin")
    module.IMAGE_AGAIN = dataclasses.replace(DEPTH, name="image")
    module.DATA = dataclasses.replace(DEPTH, name="data")
    sys.modules["clashing_plugin"] = module
    try:
        for attr in ("IMAGE_AGAIN", "DATA"):
            with pytest.raises(ConfigError, match="which mm_ray uses already"):
                load_plugin(f"clashing_plugin:{attr}")
    finally:
        del sys.modules["clashing_plugin"]


def test_a_plugin_named_only_in_a_saved_config_is_never_imported(tmp_path, monkeypatch) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "planted_modality.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from depth_plugin import DEPTH as PLANTED\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = config_from_dict({"modalities": {"plugins": ["planted_modality:PLANTED"]}})  # read: nothing runs
    with pytest.raises(ConfigError, match="which you did not name"):
        modalities_of(saved, trusted_plugins=[])
    assert not marker.exists() and "planted_modality" not in sys.modules

"""A modality from outside mm_ray, end to end: the README "Your own modality" commands, run as written.

``depth_plugin`` (in ``tests/``, as a user's own package would be) defines a ``depth`` modality: 16-bit PNG depth
maps. Real shards hold JPEG images and depth maps whose content says the class; the CLI preprocesses them with the
plug-in named on its command line, trains two epochs on Ray Train, and evaluates every modality subset. No file of
``mm_ray/`` knows the modality. A checkpoint that names the plug-in is refused unless the caller names it too.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from depth_plugin import depth_png
from PIL import Image
from shardkit import write_samples

from mm_ray.cli.main import main
from mm_ray.config.schema import RayConfig
from mm_ray.runtime import init_ray

pytestmark = pytest.mark.integration

CLASSES = 4
PLUGIN = ["modalities.plugins=[depth_plugin:DEPTH]", "data.modalities=[image,depth]"]
SETTINGS = ["image.size=16", "modalities.settings={depth: {size: 16}}"]
TINY = ["model.width=8", "model.depth=1", "model.fusion_dim=16", "train.batch_size=8", "train.num_workers=1",
        "train.warmup_steps=0"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """The module's local Ray, with ``tests/`` on ``PYTHONPATH`` so that its workers (which inherit the environment)
    import ``depth_plugin``, as a user's cluster would have their package installed."""
    tests_dir = str(Path(__file__).parents[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p))
        init_ray(RayConfig(num_cpus=2))
        yield
        ray.shutdown()


def _depth_map(label: int, rng: np.random.Generator) -> np.ndarray:
    """A plane at a distance and tilted in a direction that both say the class, with measurement noise, in
    metres."""
    y, x = np.mgrid[0:24, 0:24] / 23.0
    plane = (x, 1 - x, y, 1 - y)[label]
    return 1.0 + 2.0 * label + plane + rng.normal(0, 0.05, plane.shape)


def _image(label: int, rng: np.random.Generator) -> bytes:
    """Grey noise whose brightness only weakly follows the class: the image alone is a poor guess."""
    level = 90 + 10 * label
    pixels = np.clip(rng.normal(level, 40, (20, 20, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def _write(root: Path, shards: int, per_shard: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    labels = {}
    for s in range(shards):
        samples = {}
        for i in range(per_shard):
            key, label = f"s{seed}-{s}-{i:03d}", int(rng.integers(CLASSES))
            samples[key] = {"jpg": _image(label, rng), "depth.png": depth_png(_depth_map(label, rng)),
                            "cls": str(label).encode()}  # fmt: skip
            labels[key] = label
        write_samples(root / f"part-{s:03d}.tar", samples)
    return labels


def test_a_plugin_modality_is_preprocessed_trained_and_evaluated_like_a_built_in_one(
    tmp_path, capsys
) -> None:
    train = _write(tmp_path / "train", shards=4, per_shard=40, seed=0)
    val = _write(tmp_path / "val", shards=2, per_shard=20, seed=1)
    # One sample whose depth map is an 8-bit PNG: the plug-in's decoder quarantines it with its own reason.
    bad = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad, format="PNG")
    write_samples(tmp_path / "train" / "part-bad.tar", {"bad": {"jpg": _image(0, np.random.default_rng(9)),
                                                              "depth.png": bad.getvalue(), "cls": b"0"}})  # fmt: skip
    caches = tmp_path / "caches"
    for split in ("train", "val"):
        args = ["preprocess", str(tmp_path / split), "--out", str(caches / split), *PLUGIN, *SETTINGS]
        assert main(args) == 0
    manifest = json.loads((caches / "train" / "manifest.json").read_text())
    assert manifest["shapes"]["depth"] == [1, 16, 16] and manifest["shapes"]["image"] == [3, 16, 16]
    assert manifest["samples_ok"] == len(train) and manifest["quarantine_reasons"] == {"bad_depth": 1}
    assert set(manifest["preprocess"]["modalities"]) == {"image", "depth"}
    capsys.readouterr()

    run = ["train", f"train.cache={caches / 'train'}", f"train.val_cache={caches / 'val'}", "train.epochs=2",
           "train.lr=0.01", f"output_dir={tmp_path / 'runs'}", "name=depth", *PLUGIN, *TINY]  # fmt: skip
    assert main([*run, "--json", str(tmp_path / "train.json")]) == 0
    trained = json.loads((tmp_path / "train.json").read_text())
    assert set(trained["subsets"]) == {"image", "depth", "image+depth"}  # 2^2 - 1, in canonical order

    scored = ["evaluate", str(tmp_path / "runs" / "depth"), str(tmp_path / "val"), PLUGIN[0]]
    assert main([*scored, "--json", str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["subsets"]) == {"image", "depth", "image+depth"}
    assert result["samples"] == len(val)
    # The depth map names the class (a distance and a tilt), the image barely: with the plug-in's encoder the
    # model is far better than on the image alone, so that encoder learned in two epochs.
    full, image = result["subsets"]["image+depth"]["accuracy"], result["subsets"]["image"]["accuracy"]
    assert full > 0.8 and full > image + 0.2
    # The checkpoint names the plug-in; without the caller naming it too, its code is never imported.
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "runs" / "depth"), str(tmp_path / "val")]) == 2
    assert "pass modalities.plugins=[depth_plugin:DEPTH] if you trust it" in capsys.readouterr().err

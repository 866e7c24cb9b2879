"""Generative presets end to end on tiny demo data: ``cgan`` trains on Ray Train with two DDP workers (its
alternating discriminator / generator steps), ``mvae`` with one, and ``mm-ray generate`` writes their images and
audio through a Ray Data actor pool, run here and as a job submitted to a loopback cluster.

Slow tier: two tiny training runs, three local generate runs and one job take about 5 minutes on 2 cores.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import soundfile as sf
from loopback_cluster import LoopbackCluster
from PIL import Image
from shardkit import read_tar_samples

from mm_ray.cli.main import main
from mm_ray.config.load import load_config
from mm_ray.data.build import build_cache
from mm_ray.train.ray_trainer import fit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CACHE = ("image.size=32", "audio.n_mels=16", "audio.duration_s=0.5", "text.max_length=16")
TINY_MODEL = ("model.width=8", "model.depth=1", "model.fusion_dim=8")


@pytest.fixture(scope="module")
def caches(demo_shards, tmp_path_factory) -> tuple[Path, list[str], int]:
    shards, manifest = demo_shards
    out = tmp_path_factory.mktemp("generate")
    cfg = load_config(None, CACHE)
    val_specs = [str(shards / name) for name in manifest["shards"]["val"]]
    train = build_cache(cfg, [str(shards / name) for name in manifest["shards"]["train"]], str(out / "train"))
    build_cache(cfg, val_specs, str(out / "val"), tokenizer_json=train.tokenizer_json)
    return out, val_specs, manifest["counts"]["val"]


def _fit(out: Path, preset: str, modalities: str, workers: int) -> dict:
    overrides = [
        *CACHE,
        *TINY_MODEL,
        f"name={preset}",
        f"model.preset={preset}",
        f"model.modalities={modalities}",
        f"train.cache={out / 'train'}",
        f"train.val_cache={out / 'val'}",
        f"train.storage_path={out / 'runs'}",
        "train.epochs=1",
        f"train.num_workers={workers}",
        "train.batch_size=8",
    ]
    return fit(load_config(None, overrides)).as_dict()


def test_cgan_trains_in_two_ddp_workers_and_generates_images(caches, tmp_path: Path, capsys) -> None:
    out, val_specs, val_samples = caches
    summary = _fit(out, "cgan", "[image,text]", workers=2)
    metrics = summary["metrics"]
    # Hinge losses: the discriminator's is >= 0, the generator's (minus its score) may take either sign.
    assert metrics["train_d_loss"] >= 0 and math.isfinite(metrics["train_g_loss"])
    assert metrics["train_d_match"] > 0 and metrics["train_g_spread"] > 0
    target = tmp_path / "images"
    args = [summary["run_path"], "--from", "text", "--to", "image", "--n", "2", "--out", str(target)]
    assert main(["generate", *args, *val_specs, "--json", str(tmp_path / "g.json")]) == 0
    result = json.loads((tmp_path / "g.json").read_text())
    pngs = sorted((target / "image").glob("*.png"))
    assert result["files"] == len(pngs) == 2 * val_samples == 2 * result["inputs"]
    assert Image.open(pngs[0]).size == (32, 32)
    assert json.loads((target / "generated.json").read_text())["files"] == len(pngs)
    # The GAN generates images from text only: anything else is refused, naming what it can do.
    assert main(["generate", summary["run_path"], "--from", "text", "--to", "audio", *val_specs]) == 2
    assert "it generates: image from text" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mvae_run(caches) -> dict:
    """One tiny mvae training run on all three modalities (shared by the local and the submitted generate)."""
    out, _, _ = caches
    return _fit(out, "mvae", "[image,text,audio]", workers=1)


def test_mvae_generates_audio_as_mel_plots_and_wavs(caches, mvae_run, tmp_path: Path) -> None:
    _, val_specs, _ = caches
    metrics = mvae_run["metrics"]
    assert {"train_recon_image", "train_recon_audio", "train_beta_kl", "train_subset_ce"} <= set(metrics)
    assert 0 <= metrics["val_accuracy"] <= 1
    assert main(["generate", mvae_run["run_path"], "--from", "text,image", "--to", "audio", "--out",
                 str(tmp_path), val_specs[0]]) == 0  # fmt: skip
    wavs = sorted((tmp_path / "audio").glob("*.wav"))
    plots = sorted((tmp_path / "audio").glob("*.png"))
    assert len(wavs) == len(plots) > 0
    wave, rate = sf.read(io.BytesIO(wavs[0].read_bytes()))
    assert rate == 16000 and len(wave) == 8000
    assert Image.open(plots[0]).format == "PNG"


def test_generate_runs_as_a_job_submitted_to_a_cluster(caches, mvae_run, tmp_path: Path) -> None:
    """``mm-ray submit -- generate ...``: the command joins the cluster from inside the job (``RAY_ADDRESS``),
    its actor pool runs there, and the files land where the job was told to write them."""
    _, val_specs, val_samples = caches
    target = tmp_path / "from-job"
    report = tmp_path / "job.json"
    generate = ["generate", mvae_run["run_path"], "--from", "text", "--to", "image", "--n", "1"]
    generate += ["--out", str(target), *val_specs, "--json", str(report)]
    with LoopbackCluster.start(num_cpus=2) as cluster:
        auth = ["--address", cluster.address, "--token-file", str(cluster.token_file)]
        assert main(["submit", *auth, "--wait", "--", *generate]) == 0
    result = json.loads(report.read_text())
    pngs = sorted((target / "image").glob("*.png"))
    assert result["files"] == len(pngs) == result["inputs"] == val_samples
    assert {Image.open(p).size for p in pngs} == {(32, 32)}
    # Every validation sample's key names one generated file (the job saw every shard it was given).
    keys = {key for spec in val_specs for key in read_tar_samples(spec)}
    assert {p.stem.rsplit("_", 1)[0] for p in pngs} == keys

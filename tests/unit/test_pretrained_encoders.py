"""``model.encoders``: encoders from torchvision and HF transformers, built from tiny random-initialised models saved
to temp dirs (``tests/pretrained_models.py``) as a user's downloaded copy would be: shapes, pooling, image
normalisation, freezing then unfreezing, the text pool's tokenizer switch, self-contained checkpoints, and errors
that name the setting at fault. No Ray."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pretrained_models as pm
import pytest
import torch

from mm_ray.config.load import ConfigError, load_config
from mm_ray.data.captions import check_encoder_tokenizer, obtain_tokenizer
from mm_ray.modalities.text_decode import TextPreprocessor
from mm_ray.models import FusionModel
from mm_ray.models.pretrained import PretrainedEncoder, apply_epoch
from mm_ray.models.pretrained.backbones import build_encoder
from mm_ray.models.pretrained.encoder_spec import FeatureStats
from mm_ray.preprocess.tokenizer import train_tokenizer
from mm_ray.train.checkpoint import TOKENIZER_FILE, open_checkpoint, save_checkpoint
from mm_ray.train.encoder_weights import with_backbone_weights_from_runs
from mm_ray.train.loop import loop_epoch, seed_everything
from mm_ray.train.schedule import optimizer_and_schedule
from mm_ray.train.spec import LoopConfig

CAPTIONS = ["a red bus on the road", "the blue circle hums", "green square, low tone", "a bright yellow star"]
N_MELS, FRAMES, LENGTH, IMAGE, CLASSES = 16, 40, 12, 32, 3
SHAPES = {"image": [3, IMAGE, IMAGE], "input_ids": [LENGTH], "audio": [N_MELS, FRAMES]}


@dataclasses.dataclass(frozen=True)
class Zoo:
    resnet: Path
    bert: Path
    ast: Path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    root = tmp_path_factory.mktemp("pretrained")
    # The AST reads more frames than the data has (48 > 40): the encoder pads them, as the extractor does.
    return Zoo(
        pm.save_resnet(root / "r18" / "resnet18.pt"),
        pm.save_bert(root / "bert", CAPTIONS),
        pm.save_ast(root / "ast", n_mels=N_MELS, frames=48),
    )


def _overrides(zoo: Zoo, **image: str) -> list[str]:
    settings = {"source": "torchvision", "arch": "resnet18", "path": str(zoo.resnet), **image}
    return [
        *(f"model.encoders.image.{k}={v}" for k, v in settings.items()),
        "model.encoders.text.source=transformers",
        f"model.encoders.text.path={zoo.bert}",
        "model.encoders.audio.source=transformers",
        f"model.encoders.audio.path={zoo.ast}",
        f"audio.n_mels={N_MELS}",
        f"text.max_length={LENGTH}",
        f"image.size={IMAGE}",
        "model.preset=film",
        "model.fusion_dim=8",
    ]


def _loop(zoo: Zoo, *extra: str, **image: str) -> LoopConfig:
    cfg = load_config(None, [*_overrides(zoo, **image), "train.lr=0.01", "train.warmup_steps=0", *extra])
    vocab = len(TextPreprocessor(obtain_tokenizer(cfg, []))._tokenizer.get_vocab())
    return LoopConfig.for_run(
        cfg, shapes=SHAPES, vocab_size=vocab, num_classes=CLASSES, rows=16, has_val=False
    )


def _batch(zoo: Zoo, n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    text = TextPreprocessor(str(zoo.bert / "tokenizer.json"), max_length=LENGTH)(
        {"text_bytes": np.array([CAPTIONS[i % 4].encode() for i in range(n)], dtype=object)}
    )
    return {
        "image": rng.integers(0, 256, (n, 3, IMAGE, IMAGE), dtype=np.uint8),
        "input_ids": text["input_ids"],
        "attention_mask": text["attention_mask"],
        "audio": rng.normal(-6, 2, (n, N_MELS, FRAMES)).astype(np.float32),
        "label": rng.integers(0, CLASSES, n),
        **{f"has_{m}": np.ones(n, dtype=bool) for m in ("image", "text", "audio")},
    }


def _tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def test_every_library_encoder_gives_the_fusion_size_and_loads_its_weights(zoo: Zoo) -> None:
    model = _loop(zoo).model.build()
    assert isinstance(model, FusionModel)
    assert all(isinstance(model.encoders[m], PretrainedEncoder) for m in ("image", "text", "audio"))
    saved = torch.load(zoo.resnet, weights_only=True)
    tv = model.encoders["image"].backbone.model
    assert torch.equal(tv.conv1.weight, saved["conv1.weight"]) and isinstance(tv.fc, torch.nn.Identity)
    assert model.encoders["image"].proj.in_features == 512  # ResNet-18's pooled features
    bert = model.encoders["text"].backbone.model
    from safetensors.torch import load_file

    hf = load_file(zoo.bert / "model.safetensors")
    key = next(k for k in hf if k.endswith("word_embeddings.weight"))
    assert torch.equal(bert.embeddings.word_embeddings.weight, hf[key])
    batch = _tensors(_batch(zoo))
    out = model(batch, with_aux=True)
    assert out.logits.shape == (8, CLASSES)
    assert {m: tuple(e.shape) for m, e in out.embeddings.items()} == {
        m: (8, 8) for m in ("image", "text", "audio")
    }
    # Gradients reach every trainable parameter: DDP (find_unused_parameters off) waits for each one.
    torch.nn.functional.cross_entropy(out.logits, batch["label"]).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_images_are_normalised_with_the_encoders_constants(zoo: Zoo) -> None:
    mean, std = [0.5, 0.25, 0.125], [0.2, 0.3, 0.4]
    model = _loop(zoo, **{"mean": str(mean), "std": str(std)}).model.build().eval()
    seen = []
    model.encoders["image"].backbone.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    batch = _tensors(_batch(zoo, n=2))
    with torch.no_grad():
        model(batch)
    expected = (batch["image"].float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(
        3, 1, 1
    )
    torch.testing.assert_close(seen[0], expected)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_text_pooling(zoo: Zoo, pool: str) -> None:
    loop = _loop(zoo, f"model.encoders.text.pool={pool}")
    encoder = build_encoder("text", loop.model.encoders["text"], out_dim=8).eval()
    batch = _batch(zoo, n=4)
    ids, mask = torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])
    with torch.no_grad():
        pooled = encoder.backbone(ids, mask)
        hidden = encoder.backbone.model(input_ids=ids.long(), attention_mask=mask.long()).last_hidden_state
        # Padding ids never matter: change every padded position's id.
        again = encoder.backbone(torch.where(mask.bool(), ids, torch.full_like(ids, 7)), mask)
    m = mask.unsqueeze(-1).float()
    expected = hidden[:, 0] if pool == "cls" else (hidden * m).sum(1) / m.sum(1)
    torch.testing.assert_close(pooled, expected)
    torch.testing.assert_close(again, pooled)
    assert torch.isfinite(encoder.backbone(ids, torch.zeros_like(mask))).all()  # a row without text


def test_audio_frames_are_padded_normalised_and_pooled(zoo: Zoo) -> None:
    spec = _loop(zoo).model.encoders["audio"]
    assert spec.feature_stats == FeatureStats(mean=-4.2677393, std=4.5689974, do_normalize=True)
    encoder = build_encoder("audio", dataclasses.replace(spec, pool="cls"), out_dim=8).eval()
    mels = torch.randn(2, N_MELS, FRAMES)
    seen = []
    encoder.backbone.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["input_values"]), with_kwargs=True
    )
    with torch.no_grad():
        pooled = encoder.backbone(mels)
        longer = encoder.backbone(torch.cat([mels, torch.randn(2, N_MELS, 30)], dim=2))  # cut to 48 frames
    frames = seen[0]
    assert frames.shape == (2, 48, N_MELS)
    torch.testing.assert_close(frames[:, :FRAMES], (mels.transpose(1, 2) + 4.2677393) / (2 * 4.5689974))
    torch.testing.assert_close(frames[:, FRAMES:], torch.full((2, 8, N_MELS), 4.2677393 / (2 * 4.5689974)))
    assert pooled.shape == longer.shape == (2, 32) and seen[1].shape == (2, 48, N_MELS)


def test_frozen_backbones_do_not_change_until_they_are_unfrozen(zoo: Zoo) -> None:
    loop = _loop(zoo, "model.encoders.text.freeze=true", freeze="true", unfreeze_after="1")
    seed_everything(0)
    model = loop.model.build()
    image, text = model.encoders["image"], model.encoders["text"]
    optimizer, scheduler = optimizer_and_schedule(model, loop)

    def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in module.state_dict().items()}

    before = {
        "image": snapshot(image.backbone),
        "text": snapshot(text.backbone),
        "proj": snapshot(image.proj),
    }
    batches = [_batch(zoo, seed=s) for s in range(2)]
    assert not apply_epoch(model, 0)  # built frozen: nothing to change at epoch 0
    loop_epoch(model, batches, optimizer, scheduler, loop, device="cpu")
    assert not image.backbone.training and not any(p.requires_grad for p in image.backbone.parameters())
    # Weights and BatchNorm statistics alike: the frozen ResNet is in eval mode while the model trains.
    for name in ("image", "text"):
        after = snapshot(model.encoders[name].backbone)
        assert all(torch.equal(after[k], v) for k, v in before[name].items()), name
    assert not torch.equal(image.proj.weight, before["proj"]["weight"])  # the projection trains
    assert apply_epoch(model, 1)  # the image backbone's schedule: unfrozen from epoch 1; text stays frozen
    loop_epoch(model, batches, optimizer, scheduler, loop, device="cpu")
    assert image.backbone.training
    after = snapshot(image.backbone)
    assert not torch.equal(after["model.conv1.weight"], before["image"]["model.conv1.weight"])
    assert not torch.equal(after["model.bn1.running_mean"], before["image"]["model.bn1.running_mean"])
    assert all(torch.equal(v, before["text"][k]) for k, v in snapshot(text.backbone).items())


def test_a_checkpoint_rebuilds_the_model_without_the_pretrained_files(zoo: Zoo, tmp_path: Path) -> None:
    copies = {name: tmp_path / name for name in ("r18", "bert", "ast")}
    shutil.copytree(zoo.resnet.parent, copies["r18"])
    shutil.copytree(zoo.bert, copies["bert"])
    shutil.copytree(zoo.ast, copies["ast"])
    moved = Zoo(copies["r18"] / zoo.resnet.name, copies["bert"], copies["ast"])
    loop = _loop(moved)
    model = loop.model.build()
    optimizer, scheduler = optimizer_and_schedule(model, loop)
    loop_epoch(model, [_batch(zoo)], optimizer, scheduler, loop, device="cpu")
    ckpt_dir = tmp_path / "ckpt"
    save_checkpoint(
        ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, config=loop.to_state()
    )
    (ckpt_dir / TOKENIZER_FILE).write_text(obtain_tokenizer(load_config(None, _overrides(moved)), []))
    for folder in copies.values():
        shutil.rmtree(folder)  # the downloaded copies are gone: the checkpoint alone must do
    ckpt = open_checkpoint(ckpt_dir)
    assert ckpt.loop.model.encoders["text"].hf_config["model_type"] == "bert"
    restored = ckpt.restore_model()
    batch = _tensors(_batch(zoo, seed=3))
    with torch.no_grad():
        assert torch.equal(restored(batch), model.eval()(batch))
    # The run's image backbone as the starting weights of another run: a plain torchvision state dict.
    fused = [
        *_overrides(moved),
        f"model.encoders.image.path={ckpt_dir}",
        f"output_dir={tmp_path}",
        "name=fused",
    ]
    path = with_backbone_weights_from_runs(load_config(None, fused)).model.encoders.image.path
    assert path == str(tmp_path / "fused" / "pretrained" / "image.pt")
    saved = torch.load(path, weights_only=True)
    assert saved.keys() == model.encoders["image"].backbone.model.state_dict().keys()
    assert all(
        torch.equal(saved[k], v) for k, v in model.encoders["image"].backbone.model.state_dict().items()
    )
    with pytest.raises(
        ConfigError, match=r"model\.encoders\.image\.path: .* holds a torchvision resnet18, not"
    ):
        with_backbone_weights_from_runs(load_config(None, [*fused, "model.encoders.image.arch=resnet34"]))


def test_the_text_pool_tokenizes_with_the_models_own_tokenizer(zoo: Zoo, tmp_path: Path) -> None:
    cfg = load_config(None, _overrides(zoo))
    tokenizer_json = obtain_tokenizer(
        cfg, []
    )  # no shards read: the model's tokenizer.json, not a trained one
    texts = ["a red bus hums", "circle"]
    ours = TextPreprocessor(tokenizer_json, max_length=LENGTH)(
        {"text_bytes": np.array([t.encode() for t in texts], dtype=object)}
    )
    hf = pm.transformers_module().AutoTokenizer.from_pretrained(zoo.bert, local_files_only=True)
    theirs = hf(texts, padding="max_length", max_length=LENGTH, truncation=True)
    assert ours["input_ids"].tolist() == theirs["input_ids"]
    assert ours["attention_mask"].tolist() == theirs["attention_mask"]
    check_encoder_tokenizer(cfg, tokenizer_json)
    # A cache tokenized otherwise, or another text.tokenizer, is refused, naming the setting.
    other = train_tokenizer(["some other words"], vocab_size=64)
    with pytest.raises(ConfigError, match=r"model\.encoders\.text\.path"):
        check_encoder_tokenizer(cfg, other.to_str())
    other.save(str(tmp_path / "other.json"))
    with pytest.raises(ConfigError, match=r"text\.tokenizer: .* leave text\.tokenizer unset"):
        obtain_tokenizer(
            load_config(None, [*_overrides(zoo), f"text.tokenizer={tmp_path / 'other.json'}"]), []
        )


def test_the_default_keeps_mm_rays_own_encoders_and_spec() -> None:
    cfg = load_config(None, [f"image.size={IMAGE}"])
    loop = LoopConfig.for_run(cfg, shapes=SHAPES, vocab_size=50, num_classes=CLASSES, rows=16, has_val=False)
    assert loop.model.encoders == {} and "encoders" not in loop.model.as_dict()
    assert not any(isinstance(m, PretrainedEncoder) for m in loop.model.build().modules())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.encoders.image.arch=resnet81"],
            r"model\.encoders\.image\.arch: 'resnet81' .*did you mean resnet18",
        ),
        (
            ["model.encoders.image.path=/nonexistent/r18.pt"],
            r"model\.encoders\.image\.path: no such weights file",
        ),
        (
            ["model.encoders.text.path=/nonexistent/bert"],
            r"model\.encoders\.text\.path: no such model directory",
        ),
        (
            ["model.encoders.audio.path={bert}"],
            r"model\.encoders\.audio\.path: audio encoders are Audio Spectrogram",
        ),
        (["model.encoders.text.path={ast}"], r"model\.encoders\.text\.path: .* is an audio model"),
        (
            ["model.encoders.text.source=torchvision"],
            r"model\.encoders\.text\.source: torchvision does not build text encoders",
        ),
        (["model.encoders.image.unfreeze_after=2"], r"model\.encoders\.image\.unfreeze_after: needs"),
        (["model.encoders.image.pool=cls"], r"model\.encoders\.image\.pool"),
        (
            ["audio.n_mels=32"],
            r"audio\.n_mels: 32 mel bins, the model at model\.encoders\.audio\.path reads 16",
        ),
        (["audio.sample_rate=8000"], r"audio\.sample_rate: 8000 Hz, .* expects 16000 Hz"),
        (["text.max_length=80"], r"text\.max_length: 80 tokens, .* reads at most 64"),
        (
            ["model.encoders.image.arch=resnet34"],
            r"model\.encoders\.image\.path: .* does not hold resnet34 weights",
        ),
        (
            ["model.builder=builders:bag_of_features"],
            r"model\.encoders: model\.builder=builders:bag_of_features",
        ),
        (
            ["model.encoders.image.path={bad_pickle}"],
            r"model\.encoders\.image\.path: cannot read .* as a state dict",
        ),
    ],
)
def test_errors_name_the_setting_at_fault(
    zoo: Zoo, tmp_path: Path, overrides: list[str], message: str
) -> None:
    bad_pickle = tmp_path / "evil.pt"
    torch.save({"weights": Path("x")}, bad_pickle)  # a pickled object, not weights only: refused
    names = {"bert": zoo.bert, "ast": zoo.ast, "bad_pickle": bad_pickle}
    overrides = [o.format(**names) for o in overrides]
    shapes = SHAPES if "audio.n_mels=32" not in overrides else {**SHAPES, "audio": [32, FRAMES]}
    length = 80 if "text.max_length=80" in overrides else LENGTH
    cfg = load_config(None, [*_overrides(zoo), *overrides])
    with pytest.raises(ConfigError, match=message):
        loop = LoopConfig.for_run(
            cfg, shapes={**shapes, "input_ids": [length]}, vocab_size=40, num_classes=3, rows=8, has_val=False
        )
        loop.model.build()


def test_importing_mm_ray_imports_neither_library() -> None:
    code = (
        "import sys, mm_ray, mm_ray.models, mm_ray.train.spec, mm_ray.train.checkpoint, mm_ray.data.stages\n"
        "print(sorted({'torchvision', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow  # ~8 s on 2 cores
def test_library_encoders_export_to_onnx_with_the_models_logits(zoo: Zoo, tmp_path: Path) -> None:
    """ResNet-18, BERT and AST through torch.export to ONNX, read back by ONNX Runtime by input name."""
    pytest.importorskip("onnxruntime", reason="ONNX export needs the [onnx] extra")
    import onnxruntime

    from mm_ray.inference.export import ONNX_FILE, model_inputs, onnx_to

    spec = _loop(zoo).model
    model = spec.build().eval()
    inputs = model_inputs(spec)
    onnx_to(model, inputs, spec, tmp_path / ONNX_FILE)
    batch = _tensors(_batch(zoo, n=3, seed=5))
    session = onnxruntime.InferenceSession(str(tmp_path / ONNX_FILE), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {n: batch[n].numpy() for n in inputs})
    with torch.no_grad():
        want = model(batch)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=0, atol=1e-4)

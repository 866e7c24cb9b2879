"""Library encoders end to end: a tiny torchvision ResNet-18, BERT and Audio Spectrogram Transformer, saved to temp
dirs as a user's downloaded copies would be, train a ``film`` model on Ray Train with two DDP workers from caches
tokenized with the BERT's own tokenizer (the image backbone frozen for the first epoch, then re-wrapped and
fine-tuned; the text backbone frozen for the whole run; rank 0 validates the ResNet, BatchNorm buffers and all,
alone every epoch); with the
pretrained files gone, ``evaluate`` rebuilds the model from the checkpoint alone and scores the raw val shards
exactly as training scored the val cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pretrained_models as pm
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from mm_ray.config.load import load_config
from mm_ray.data.build import build_cache
from mm_ray.data.captions import iter_captions
from mm_ray.data.members import member_map
from mm_ray.train.checkpoint import open_checkpoint
from mm_ray.train.evaluate import evaluate
from mm_ray.train.ray_trainer import fit

# slow: two caches, a Ray Train run and an evaluation with three library models (about 2.5 min on a loaded 2-core
# machine), beyond what the default run can add; the unit tests cover the same parts without Ray.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

CACHE = ("image.size=32", "audio.n_mels=16", "audio.duration_s=0.5", "text.max_length=16")
FRAMES = 1 + 8000 // 160  # 0.5 s at 16 kHz, hop 160


def test_train_on_library_encoders_then_evaluate_from_the_checkpoint_alone(
    demo_shards, tmp_path: Path
) -> None:
    shards, manifest = demo_shards
    train_specs = [str(shards / name) for name in manifest["shards"]["train"]]
    val_specs = [str(shards / name) for name in manifest["shards"]["val"]]
    zoo = tmp_path / "downloaded"
    captions = iter_captions(train_specs, member_map(load_config(None, CACHE)))
    resnet = pm.save_resnet(zoo / "resnet18.pt")
    bert = pm.save_bert(zoo / "bert", captions)
    ast = pm.save_ast(zoo / "ast", n_mels=16, frames=FRAMES)
    encoders = [
        "model.encoders.image.source=torchvision",
        "model.encoders.image.arch=resnet18",
        f"model.encoders.image.path={resnet}",
        "model.encoders.image.freeze=true",
        "model.encoders.image.unfreeze_after=1",
        "model.encoders.text.source=transformers",
        f"model.encoders.text.path={bert}",
        "model.encoders.text.freeze=true",
        "model.encoders.text.pool=cls",
        "model.encoders.audio.source=transformers",
        f"model.encoders.audio.path={ast}",
    ]
    cfg = load_config(None, [*CACHE, *encoders])
    train = build_cache(cfg, train_specs, str(tmp_path / "train"))
    # The text pool tokenized with the BERT's own tokenizer.json, not one trained on the captions.
    assert train.tokenizer_json == Tokenizer.from_file(str(bert / "tokenizer.json")).to_str()
    build_cache(cfg, val_specs, str(tmp_path / "val"), tokenizer_json=train.tokenizer_json)
    run = [
        *CACHE,
        *encoders,
        "name=pretrained",
        "model.preset=film",
        "model.fusion_dim=8",
        f"train.cache={tmp_path / 'train'}",
        f"train.val_cache={tmp_path / 'val'}",
        f"train.storage_path={tmp_path / 'runs'}",
        "train.epochs=2",
        "train.num_workers=2",
        "train.batch_size=8",
        "train.subset_eval_every=0",
    ]
    summary = fit(load_config(None, run)).as_dict()
    assert summary["epochs_run"] == 2 and summary["checkpoint"]
    original = {
        "image": torch.load(resnet, weights_only=True)["layer1.0.conv1.weight"],
        "text": next(
            v
            for k, v in load_file(bert / "model.safetensors").items()
            if k.endswith("word_embeddings.weight")
        ),
    }
    shutil.rmtree(zoo)  # evaluation needs the checkpoint only

    ckpt = open_checkpoint(summary["checkpoint"])
    assert ckpt.tokenizer_json == train.tokenizer_json  # the BERT's own tokenizer travels with the checkpoint
    assert set(ckpt.loop.model.encoders) == {"image", "text", "audio"}
    state = ckpt.state["model"]
    # The text backbone stayed frozen for the whole run; the image backbone was unfrozen for epoch 2.
    assert torch.equal(
        state["encoders.text.backbone.model.embeddings.word_embeddings.weight"], original["text"]
    )
    assert not torch.equal(state["encoders.image.backbone.model.layer1.0.conv1.weight"], original["image"])
    scores = evaluate(summary["checkpoint"], val_specs)
    for subset, reference in summary["subsets"].items():
        got = scores["subsets"][subset]
        assert got["samples"] == reference["samples"] and got["accuracy"] == reference["accuracy"], subset
        assert got["loss"] == pytest.approx(reference["loss"], rel=1e-5), subset

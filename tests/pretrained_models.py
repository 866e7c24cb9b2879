"""Tiny random-initialised models of each library, saved as a user's downloaded copy would be, for the
``model.encoders`` tests: a torchvision ResNet-18 state dict, a one-layer BERT with a WordPiece tokenizer trained
here, and a one-layer Audio Spectrogram Transformer with its feature-extractor settings.

    save_resnet(tmp / "r18.pt")                              # torch.save(model.state_dict(), path)
    save_bert(tmp / "bert", captions)                         # config.json, model.safetensors, tokenizer.json
    save_ast(tmp / "ast", n_mels=16, frames=51)               # config.json, model.safetensors, preprocessor_config.json
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from mm_ray.libraries import torchvision_models, transformers_module
from mm_ray.preprocess.tokenizer import train_tokenizer

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def save_resnet(path: Path, *, arch: str = "resnet18", seed: int = 0) -> Path:
    """A random ``arch`` (1000-class head, as torchvision ships it) saved as a state dict at ``path``."""
    torch.manual_seed(seed)
    model = torchvision_models().get_model(arch, weights=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def save_bert(folder: Path, captions: Iterable[str], *, max_positions: int = 64, seed: int = 0) -> Path:
    """A one-layer BERT and its WordPiece tokenizer (trained on ``captions``) saved with ``save_pretrained``."""
    transformers = transformers_module()
    tokenizer = train_tokenizer(list(captions), vocab_size=200)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=tokenizer.get_vocab_size(), max_position_embeddings=max_positions, **TINY
    )
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def save_ast(folder: Path, *, n_mels: int, frames: int, sample_rate: int = 16000, seed: int = 0) -> Path:
    """A one-layer AST over ``n_mels`` x ``frames`` log-mels (16 x 16 patches) and its extractor settings."""
    transformers = transformers_module()
    torch.manual_seed(seed)
    config = transformers.ASTConfig(
        num_mel_bins=n_mels, max_length=frames, patch_size=16, frequency_stride=8, time_stride=8, **TINY
    )
    transformers.ASTModel(config).save_pretrained(folder)
    extractor = transformers.ASTFeatureExtractor(
        num_mel_bins=n_mels, max_length=frames, sampling_rate=sample_rate
    )
    extractor.save_pretrained(folder)
    return folder

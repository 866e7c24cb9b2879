"""A model of one's own for ``model.builder`` tests: ``model.builder=builders:bag_of_features``.

The smallest module honouring the input contract: per-modality features (mean pixel colour, mean of the token
embeddings, mean of each mel band), each zeroed where its modality is absent, concatenated, then an MLP.
It has an ``encoders`` ModuleDict, so ``train.lr_by_modality`` applies, and an ``embed`` method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CALLS: list[dict] = []
"""Every call's keyword arguments (the test checks what a builder is given)."""


class _Mean(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(channels, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.float().flatten(2).mean(-1))


class _Tokens(nn.Module):
    def __init__(self, vocab_size: int, hidden: int):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, hidden, mode="mean")

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids.long() * mask.long())  # padding becomes token 0


class BagOfFeatures(nn.Module):
    def __init__(self, modalities, num_classes, n_mels, vocab_size, hidden):
        super().__init__()
        builders = {
            "image": lambda: _Mean(3, hidden),
            "text": lambda: _Tokens(vocab_size, hidden),
            "audio": lambda: _Mean(n_mels, hidden),
        }
        self.modalities = tuple(m for m in ("image", "text", "audio") if m in modalities)
        self.encoders = nn.ModuleDict({m: builders[m]() for m in self.modalities})
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden * len(self.modalities), num_classes))

    def _features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for m, encoder in self.encoders.items():
            if m == "text":
                h = encoder(batch["input_ids"], batch["attention_mask"])
            else:
                h = encoder(batch[m].float() / (255.0 if m == "image" else 1.0))
            present = batch.get(f"has_{m}")
            out[m] = h if present is None else h * present.view(-1, 1).to(h.dtype)
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat(list(self._features(batch).values()), dim=1))

    def embed(self, batch):
        features = self._features(batch)
        present = {m: batch[f"has_{m}"].bool() for m in features}
        return {m: F.normalize(h, dim=-1) for m, h in features.items()}, present


def bag_of_features(
    *, modalities, num_classes, image_size, vocab_size, n_mels, max_text_len, hidden: int = 16
) -> nn.Module:
    CALLS.append(
        dict(
            modalities=modalities,
            num_classes=num_classes,
            image_size=image_size,
            vocab_size=vocab_size,
            n_mels=n_mels,
            max_text_len=max_text_len,
            hidden=hidden,
        )
    )
    return BagOfFeatures(modalities, num_classes, n_mels, vocab_size, hidden)


def not_a_module(**kwargs) -> str:
    return "no model here"

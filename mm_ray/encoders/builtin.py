"""The built-in unimodal encoders: each maps one modality's model-ready batch column to ``[B, out_dim]``.

    image = ImageEncoder(width=64, depth=2, out_dim=64)        # float32 [B, 3, S, S] (normalized)
    text = TextEncoder(vocab_size=8192, dim=64, depth=2, out_dim=64)  # int ids [B, L] + mask [B, L]
    text = LSTMTextEncoder(vocab_size=8192, dim=64, depth=1, out_dim=64)  # same inputs, an RNN inside
    audio = AudioEncoder(n_mels=64, width=64, depth=2, out_dim=64)     # log-mel float32 [B, n_mels, T]
    features = FeaturesEncoder(in_dim=512, width=64, depth=2, out_dim=64)  # float32 [B, ...] (flattened)

``depth=0`` gives the *shallow* form used by early fusion: only the stem and a global pool, so
the joint network sees low-level features. Normalization is per sample (GroupNorm / LayerNorm,
never BatchNorm) so one sample's output never depends on what else is in the batch: a missing
modality's placeholder input cannot leak into its neighbours' features.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(conv: nn.Module, channels: int) -> nn.Sequential:
    # GroupNorm(1, C) is LayerNorm over (C, H, W): per-sample, batch-size independent.
    return nn.Sequential(conv, nn.GroupNorm(1, channels), nn.GELU())


def _conv_stack(conv: type[nn.Module], stem: nn.Module, width: int, depth: int) -> tuple[nn.Sequential, int]:
    """``stem`` then ``depth`` stride-2 blocks of ``conv`` doubling the width (capped at 4x).

    Returns the stack and its output channels.
    """
    layers = [_conv_block(stem, width)]
    channels = width
    for i in range(depth):
        nxt = width * min(2 ** (i + 1), 4)
        layers.append(_conv_block(conv(channels, nxt, 3, stride=2, padding=1), nxt))
        channels = nxt
    return nn.Sequential(*layers), channels


class ImageEncoder(nn.Module):
    """A small CNN: a stride-2 stem, ``depth`` stride-2 blocks doubling the width (capped at 4x),
    global average pooling and a linear projection. Works for any image size >= 2 ** (depth + 1).
    """

    def __init__(self, *, width: int = 64, depth: int = 2, out_dim: int = 64):
        super().__init__()
        self.features, channels = _conv_stack(
            nn.Conv2d, nn.Conv2d(3, width, 3, stride=2, padding=1), width, depth
        )
        self.proj = nn.Linear(channels, out_dim)
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float32 ``[B, 3, H, W]`` (already normalized) -> ``[B, out_dim]``."""
        return self.proj(self.features(images).mean(dim=(2, 3)))


class TextEncoder(nn.Module):
    """Token + learned position embeddings, a pre-norm transformer over the attended tokens, and a
    masked mean pool. ``depth=0`` is a bag of embeddings (masked mean of the token embeddings).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        max_len: int = 256,
        dropout: float = 0.0,
        out_dim: int = 64,
    ):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.transformer = None
        if depth > 0:
            layer = nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True, norm_first=True
            )
            # Nested tensors are a fast path for inference only; off keeps train/eval numerics equal.
            self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim)
        self.max_len = max_len
        self.out_dim = out_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """int ids ``[B, L]`` and mask ``[B, L]`` (nonzero = real token) -> ``[B, out_dim]``."""
        length = input_ids.shape[1]
        mask, _ = _token_mask(input_ids, attention_mask, self.max_len)
        x = self.tokens(input_ids.long()) + self.positions[:length]
        if self.transformer is not None:
            x = self.transformer(x, src_key_padding_mask=~mask)
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1)
        return self.proj(self.norm(pooled))


def _token_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(bool mask of the tokens a text encoder reads ``[B, L]``, rows that had no token ``[B]``).

    A row with no token at all (empty or missing text) would make attention and pooling divide by zero
    (NaN); it reads its first position instead. Raises ``ValueError`` for rows longer than ``max_len``.
    """
    length = input_ids.shape[1]
    if length > max_len:
        raise ValueError(f"text length {length} exceeds the encoder's max_len {max_len}")
    mask = attention_mask.bool().clone()
    empty = ~mask.any(dim=1)
    mask[:, 0] |= empty
    return mask, empty


class LSTMTextEncoder(nn.Module):
    """Token embeddings, a (bidirectional) LSTM over the real tokens only, attention pooling over them
    and a linear projection; called like ``TextEncoder``. ``depth`` is the number of LSTM layers;
    ``depth=0`` attention-pools the token embeddings directly (the shallow form early fusion uses).

    Padding never reaches the LSTM: the real tokens are moved to the front of each row (in order)
    and packed, so neither direction runs over padding and a row's output does not depend on how
    much padding it carries or what the padded ids are.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        dim: int = 64,
        depth: int = 1,
        bidirectional: bool = True,
        max_len: int = 256,
        dropout: float = 0.0,
        out_dim: int = 64,
    ):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.lstm = None
        hidden = dim
        if depth > 0:
            # nn.LSTM applies dropout only between layers; one layer would warn, so pass 0 there.
            self.lstm = nn.LSTM(
                dim, dim, depth, batch_first=True, bidirectional=bidirectional, dropout=dropout * (depth > 1)
            )
            hidden = dim * (2 if bidirectional else 1)
        self.score = nn.Linear(hidden, 1)
        self.norm = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, out_dim)
        self.max_len = max_len
        self.out_dim = out_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """int ids ``[B, L]`` and mask ``[B, L]`` (nonzero = real token) -> ``[B, out_dim]``."""
        length = input_ids.shape[1]
        mask, empty = _token_mask(input_ids, attention_mask, self.max_len)
        # The first position of a row without tokens is always id 0 here, so even such a row does not
        # depend on what its padding holds.
        ids = input_ids.long().masked_fill(empty.unsqueeze(1), 0)
        # Real tokens first, in their order (a stable sort of "is padding"), so packing works for any mask.
        order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
        ids = ids.gather(1, order)
        mask = mask.gather(1, order)
        x = self.tokens(ids)
        if self.lstm is not None:
            # Packing needs the lengths on the CPU: one small device-to-host copy per batch.
            lengths = mask.sum(dim=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=length)
        scores = self.score(x).squeeze(-1).float().masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=1).unsqueeze(-1).to(x.dtype)
        return self.proj(self.norm((weights * x).sum(dim=1)))


class AudioEncoder(nn.Module):
    """A 1-D CNN over log-mel frames (mel bins as channels): per-sample input normalization, a stem,
    ``depth`` stride-2 blocks, then mean and max pooling over time and a linear projection.
    """

    def __init__(self, *, n_mels: int, width: int = 64, depth: int = 2, out_dim: int = 64):
        super().__init__()
        # Log-mel values sit far from zero (log(1e-6) = -13.8 for silence); normalize per sample.
        self.input_norm = nn.GroupNorm(1, n_mels)
        self.features, channels = _conv_stack(nn.Conv1d, nn.Conv1d(n_mels, width, 3, padding=1), width, depth)
        # Mean pooling keeps overall timbre, max pooling keeps short events.
        self.proj = nn.Linear(2 * channels, out_dim)
        self.out_dim = out_dim

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """float32 ``[B, n_mels, T]`` -> ``[B, out_dim]``."""
        h = self.features(self.input_norm(mels))
        return self.proj(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))


class FeaturesEncoder(nn.Module):
    """An MLP over a precomputed array, flattened: LayerNorm of the input (embeddings from elsewhere come at any
    scale), ``max(1, depth)`` hidden layers of ``2 * width`` units, a linear projection. ``depth=0`` (early
    fusion's shallow form) keeps one hidden layer."""

    def __init__(self, *, in_dim: int, width: int = 64, depth: int = 2, out_dim: int = 64):
        super().__init__()
        hidden = 2 * width
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)]
        size = in_dim
        for _ in range(max(1, depth)):
            layers += [nn.Linear(size, hidden), nn.GELU()]
            size = hidden
        layers.append(nn.Linear(size, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """float ``[B, ...]`` -> ``[B, out_dim]``."""
        return self.net(features.flatten(1))

"""A tiny model fits an XOR of two modalities when its fusion models interactions, and additive can't.

Image bit: which half of the picture is bright. Audio bit: whether the low or the high mel bands
carry the energy. Label = image bit XOR audio bit, so each modality alone says nothing about the
label, and a sum of per-modality functions can get at most 3 of the 4 cells right (75 %):
f(x0) + g(y0) < 0 < f(x0) + g(y1) and f(x1) + g(y0) > 0 > f(x1) + g(y1) sum to a contradiction.
"""

from __future__ import annotations

import pytest
import torch

from mm_ray.models import build_model

N_IMAGES, N_SOUNDS, SIZE, N_MELS, FRAMES = 16, 8, 32, 16, 26


def xor_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every pairing of N_IMAGES noisy images with N_SOUNDS noisy spectrograms.

    Each image appears with both audio bits (and each sound with both image bits), so no single
    input predicts the label: an additive model cannot memorize its way past 75 % through the noise.
    """
    g = torch.Generator().manual_seed(seed)
    a = torch.arange(N_IMAGES) % 2
    b = torch.arange(N_SOUNDS) % 2
    images = torch.rand(N_IMAGES, 3, SIZE, SIZE, generator=g) * 60
    images[a == 0, :, :, : SIZE // 2] += 150
    images[a == 1, :, :, SIZE // 2 :] += 150
    sounds = torch.randn(N_SOUNDS, N_MELS, FRAMES, generator=g) * 0.5 - 10.0
    sounds[b == 0, : N_MELS // 2] += 6.0
    sounds[b == 1, N_MELS // 2 :] += 6.0
    img_idx, snd_idx = torch.cartesian_prod(torch.arange(N_IMAGES), torch.arange(N_SOUNDS)).unbind(1)
    return {
        "image": images[img_idx].to(torch.uint8),
        "audio": sounds[snd_idx],
        "label": a[img_idx] ^ b[snd_idx],
    }


def train_accuracy(preset: str, steps: int) -> float:
    model = build_model(
        preset,
        modalities=("image", "audio"),
        num_classes=2,
        image_size=SIZE,
        vocab_size=10,
        n_mels=N_MELS,
        width=8,
        depth=1,
        fusion_dim=16,
        tensor_dim=8,
    )
    batch = xor_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(batch), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(batch).argmax(dim=1) == batch["label"]).float().mean().item()


@pytest.mark.parametrize("preset", ["late_concat", "tensor"])
def test_interaction_fusions_fit_xor(preset):
    assert train_accuracy(preset, steps=150) > 0.95


def test_additive_fusion_cannot_fit_xor():
    assert train_accuracy("additive", steps=150) < 0.8

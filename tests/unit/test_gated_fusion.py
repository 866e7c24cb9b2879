"""Gated fusion weighs only the modalities a sample has: an absent one gets no weight at all, so the output is
the gated sum over the present ones (tested as the additive fusion is, against a computation by hand)."""

from __future__ import annotations

import math

import torch

from mm_ray.models.fusion import GatedFusion

MODALITIES = ("image", "text", "audio")


def test_gated_fusion_weighs_the_present_modalities_only() -> None:
    torch.manual_seed(0)
    fusion = GatedFusion(modalities=MODALITIES, dim=4, hidden=8, num_classes=3).eval()
    emb = {m: torch.randn(3, 4) * 3 for m in MODALITIES}
    # Row 0: all present; row 1: image and audio; row 2: none (counted as all present, no 0/0).
    present = {
        "image": torch.tensor([True, True, False]),
        "text": torch.tensor([True, False, False]),
        "audio": torch.tensor([True, True, False]),
    }
    with torch.no_grad():
        out = fusion(emb, present)
        scores = fusion.gate(torch.cat([emb[m] for m in MODALITIES], dim=1)).tolist()  # [B, M] as numbers

        def by_hand(row: int, kept: tuple[str, ...]) -> torch.Tensor:
            # A softmax over the kept modalities' scores, written out; the absent ones take no part.
            exp = {m: math.exp(scores[row][MODALITIES.index(m)]) for m in kept}
            total = sum(exp.values())
            mixed = sum((exp[m] / total) * emb[m][row] for m in kept)
            return fusion.head(mixed.unsqueeze(0))[0]

        torch.testing.assert_close(out[0], by_hand(0, MODALITIES))
        torch.testing.assert_close(out[1], by_hand(1, ("image", "audio")))
        torch.testing.assert_close(out[2], by_hand(2, MODALITIES))

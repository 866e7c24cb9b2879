"""Missing modalities: presence masks, the learned missing embedding, modality dropout and subset dropout."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from mm_ray.models import PRESETS, build_model, drop_modalities, drop_to_subsets

B, SIZE, LENGTH, VOCAB, N_MELS, FRAMES = 4, 32, 16, 100, 16, 26
FEAT = 12
ALL = ("image", "text", "audio", "features")
"""Every built-in modality: the features vector (an embedding computed elsewhere) too."""
ABSENT = torch.tensor([True, False, True, False])  # rows 1 and 3 lack the modality under test


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (B, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
        "input_ids": torch.randint(0, VOCAB, (B, LENGTH), generator=g, dtype=torch.int32),
        "attention_mask": torch.ones(B, LENGTH, dtype=torch.int8),
        "audio": torch.randn(B, N_MELS, FRAMES, generator=g) - 8.0,
        "features": torch.randn(B, FEAT, generator=g),
        "has_image": torch.ones(B, dtype=torch.bool),
        "has_text": torch.ones(B, dtype=torch.bool),
        "has_audio": torch.ones(B, dtype=torch.bool),
        "has_features": torch.ones(B, dtype=torch.bool),
    }


def tiny(preset: str, modalities=("image", "text", "audio"), **kwargs):
    return build_model(
        preset,
        modalities=modalities,
        num_classes=3,
        shapes={"features": (FEAT,)},
        image_size=SIZE,
        vocab_size=VOCAB,
        n_mels=N_MELS,
        width=16,
        depth=1,
        fusion_dim=16,
        max_text_len=LENGTH,
        **kwargs,
    )


def with_garbage(batch: dict[str, torch.Tensor], modality: str, seed: int) -> dict[str, torch.Tensor]:
    """The batch with ``modality`` marked absent in rows 1 and 3 and filled with garbage there."""
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    missing = ~ABSENT
    out[f"has_{modality}"] = ABSENT.clone()
    if modality == "image":
        out["image"] = batch["image"].clone()
        out["image"][missing] = torch.randint(0, 256, (2, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    elif modality == "text":
        # Ids far outside the vocabulary would crash the embedding if they reached it.
        out["input_ids"] = batch["input_ids"].clone()
        out["input_ids"][missing] = torch.randint(10**6, 10**7, (2, LENGTH), generator=g, dtype=torch.int32)
        out["attention_mask"] = batch["attention_mask"].clone()
        out["attention_mask"][missing] = torch.randint(0, 2, (2, LENGTH), generator=g, dtype=torch.int8)
    else:
        out["audio"] = batch["audio"].clone()
        out["audio"][missing] = torch.randn(2, N_MELS, FRAMES, generator=g) * 1e6
        out["audio"][3, 0, 0] = float("nan")
    return out


@pytest.mark.parametrize(
    "preset", ["late_concat", "gated", "cross_transformer", "low_rank_tensor", "additive"]
)
@pytest.mark.parametrize("modality", ["image", "text", "audio"])
def test_absent_modality_content_does_not_change_logits(preset, modality):
    model = tiny(preset).eval()
    batch = make_batch()
    with torch.no_grad():
        first = model(with_garbage(batch, modality, seed=1))
        second = model(with_garbage(batch, modality, seed=2))
        all_present = model(batch)
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first, second)
    # Present rows are untouched; absent rows really did change (the missing embedding was used).
    torch.testing.assert_close(first[ABSENT], all_present[ABSENT])
    assert not torch.allclose(first[~ABSENT], all_present[~ABSENT])


def test_garbage_in_absent_rows_leaves_gradients_finite():
    model = tiny("film").train()
    batch = with_garbage(make_batch(), "audio", seed=3)  # includes a NaN and huge values
    model(batch).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.missing["audio"].grad.abs().sum() > 0  # the missing embedding is trained


def test_missing_presence_column_means_present():
    model = tiny("late_concat").eval()
    batch = make_batch()
    without = {k: v for k, v in batch.items() if not k.startswith("has_")}
    with torch.no_grad():
        torch.testing.assert_close(model(without), model(batch))


def test_drop_modalities_never_drops_every_present_modality():
    g = torch.Generator().manual_seed(0)
    present = torch.rand(20_000, 3, generator=g) < 0.6
    for p in (0.3, 0.9, 0.999):
        kept = drop_modalities(present, p, generator=g)
        assert not (kept & ~present).any()  # never invents a modality
        assert torch.equal(kept.any(dim=1), present.any(dim=1))
        # A row with k present loses each with probability p, except that when all k would go
        # (probability p**k) one comes back: expected loss k*p - p**k per row.
        k = present.sum(dim=1).double()
        expected = (k * p - torch.where(k > 0, p**k, 0.0)).sum() / k.sum()
        dropped = (present & ~kept).sum() / present.sum()
        assert abs(dropped.item() - expected.item()) < 0.01, (p, dropped, expected)


def test_drop_modalities_rescues_a_uniformly_chosen_modality():
    present = torch.ones(30_000, 3, dtype=torch.bool)
    kept = drop_modalities(present, 0.9999, generator=torch.Generator().manual_seed(1))
    share = kept.float().mean(dim=0) / kept.float().mean(dim=0).sum()
    torch.testing.assert_close(share, torch.full((3,), 1 / 3), atol=0.02, rtol=0)
    assert torch.equal(drop_modalities(present, 0.0), present)


def presence_seen_by_fusion(model) -> list[torch.Tensor]:
    """A list that collects, at every forward, the presence ``[B, M]`` the model's fusion is given."""
    seen: list[torch.Tensor] = []
    model.fusion.register_forward_pre_hook(
        lambda _module, args: seen.append(torch.stack(list(args[1].values()), 1))
    )
    return seen


def test_model_dropout_acts_in_training_and_is_off_in_eval():
    model = tiny("gated", modality_dropout=0.7)
    seen = presence_seen_by_fusion(model)
    batch = make_batch()
    batch["has_text"] = torch.tensor([True, False, False, True])
    batch["has_audio"] = torch.tensor([False, False, True, True])
    given = torch.stack([batch["has_image"], batch["has_text"], batch["has_audio"]], 1)
    model.train()
    for _ in range(100):
        model(batch)
    seen_train = torch.stack(seen)
    assert (seen_train.any(dim=2)).all()  # every sample keeps at least one modality
    assert not (seen_train & ~given).any()
    assert (seen_train != given).any()  # and dropout did hide some
    seen.clear()
    model.eval()
    reference = tiny("gated").eval()  # same seed, no modality dropout
    with torch.no_grad():
        torch.testing.assert_close(model(batch), reference(batch))
    assert torch.equal(seen[0], given)


def _proper_subsets(row: tuple[bool, ...]) -> list[tuple[bool, ...]]:
    """Every non-empty proper subset of the present entries of ``row``, enumerated with itertools."""
    present = [i for i, p in enumerate(row) if p]
    out = []
    for k in range(1, len(present)):
        for chosen in itertools.combinations(present, k):
            out.append(tuple(i in chosen for i in range(len(row))))
    return out


@pytest.mark.parametrize("row", [(True, True, True), (True, False, True)])
def test_drop_to_subsets_draws_every_proper_subset_equally_often(row):
    n, p = 60_000, 0.6
    present = torch.tensor([row] * n)
    seen = Counter(tuple(r) for r in drop_to_subsets(present, p, torch.Generator().manual_seed(3)).tolist())
    proper = _proper_subsets(row)
    assert set(seen) == {row, *proper}
    assert abs(seen[row] / n - (1 - p)) < 0.01
    for subset in proper:
        assert abs(seen[subset] / n - p / len(proper)) < 0.01, (subset, seen[subset] / n)


def test_drop_to_subsets_keeps_rows_with_one_or_no_modality_and_is_off_at_zero():
    present = torch.tensor([[False, False, True], [False, False, False], [True, True, False]])
    out = drop_to_subsets(present, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(out[:2], present[:2])
    assert out[2].sum() == 1 and not (out[2] & ~present[2]).any()
    assert torch.equal(drop_to_subsets(present, 0.0), present)


def test_model_subset_dropout_shows_only_proper_subsets_in_training_and_is_off_in_eval():
    model = tiny("film", subset_dropout=1.0)
    seen = presence_seen_by_fusion(model)
    batch = make_batch()
    model.train()
    for _ in range(50):
        model(batch)
    counts = torch.stack(seen).sum(dim=2)  # modalities shown per sample
    assert ((counts >= 1) & (counts <= 2)).all()
    assert (counts == 1).any() and (counts == 2).any()
    seen.clear()
    model.eval()
    reference = tiny("film").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), reference(batch))
    assert seen[0].all()


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_subset_dropout_out_of_range_is_an_error(bad):
    with pytest.raises(ValueError, match="subset_dropout"):
        tiny("late_concat", subset_dropout=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_modality_dropout_out_of_range_is_an_error(bad):
    with pytest.raises(ValueError, match="modality_dropout"):
        tiny("late_concat", modality_dropout=bad)


def test_every_preset_handles_a_sample_with_no_modality_at_all():
    batch = make_batch()
    for key in ("has_image", "has_text", "has_audio", "has_features"):
        batch[key] = torch.tensor([False, True, True, True])
    for preset in PRESETS:
        logits = tiny(preset, ALL).eval()(batch)
        assert torch.isfinite(logits).all(), preset


def test_additive_fusion_averages_the_logits_of_the_present_modalities_only():
    from mm_ray.models.fusion import AdditiveFusion

    torch.manual_seed(0)
    fusion = AdditiveFusion(modalities=("image", "text", "audio"), dim=4, hidden=8, num_classes=3).eval()
    emb = {m: torch.randn(3, 4) for m in ("image", "text", "audio")}
    # Row 0: all present; row 1: image and audio; row 2: none (counted as all present, no 0/0).
    present = {
        "image": torch.tensor([True, True, False]),
        "text": torch.tensor([True, False, False]),
        "audio": torch.tensor([True, True, False]),
    }
    with torch.no_grad():
        out = fusion(emb, present)
        head = {m: fusion.heads[m](emb[m]) for m in emb}
    every = (head["image"] + head["text"] + head["audio"]) / 3
    torch.testing.assert_close(out[0], every[0])
    torch.testing.assert_close(out[1], (head["image"][1] + head["audio"][1]) / 2)
    torch.testing.assert_close(out[2], every[2])

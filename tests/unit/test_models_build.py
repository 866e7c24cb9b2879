"""Model zoo: every preset builds for every modality subset, trains end to end, and is seeded."""

from __future__ import annotations

import itertools

import pytest
import torch

from mm_ray.models import ENCODER_SIZES, PRESETS, build_model, param_groups
from mm_ray.models.fusion import LowRankTensorFusion

B, NUM_CLASSES, SIZE, LENGTH, VOCAB, N_MELS, FRAMES = 4, 5, 32, 16, 100, 16, 26
FEAT = 12
ALL = ("image", "text", "audio", "features")
"""Every built-in modality: the features vector (an embedding computed elsewhere) too."""
SUBSETS = [c for r in range(1, 5) for c in itertools.combinations(("image", "text", "audio", "features"), r)]
# cgan classifies from text only and generates images: not a fusion of the modalities it is given.
FUSION_PRESETS = [p for p, spec in PRESETS.items() if spec.only is None and spec.family != "cgan"]
UNIMODAL_PRESETS = [p for p, spec in PRESETS.items() if spec.only is not None]


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([16, 5, 1, 0])  # the last row has no text tokens at all
    return {
        "image": torch.randint(0, 256, (B, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
        "input_ids": torch.randint(0, VOCAB, (B, LENGTH), generator=g, dtype=torch.int32),
        "attention_mask": (torch.arange(LENGTH) < lengths[:, None]).to(torch.int8),
        "audio": torch.randn(B, N_MELS, FRAMES, generator=g) - 8.0,
        "features": torch.randn(B, FEAT, generator=g),
        "label": torch.randint(0, NUM_CLASSES, (B,), generator=g),
        "has_image": torch.ones(B, dtype=torch.bool),
        "has_text": torch.ones(B, dtype=torch.bool),
        "has_audio": torch.ones(B, dtype=torch.bool),
        "has_features": torch.ones(B, dtype=torch.bool),
    }


def tiny(preset: str, modalities=ALL, **kwargs):
    args = dict(num_classes=NUM_CLASSES, image_size=SIZE, vocab_size=VOCAB, n_mels=N_MELS)
    args["shapes"] = {"features": (FEAT,)}
    args.update(width=16, depth=1, fusion_dim=16, max_text_len=LENGTH)
    return build_model(preset, modalities=modalities, **{**args, **kwargs})


@pytest.mark.parametrize("preset", FUSION_PRESETS)
def test_fusion_presets_give_logits_for_every_modality_subset(preset):
    batch = make_batch()
    for modalities in SUBSETS:
        model = tiny(preset, modalities)
        assert model.modalities == modalities
        logits = model(batch)
        assert logits.shape == (B, NUM_CLASSES), (preset, modalities)
        assert torch.isfinite(logits).all(), (preset, modalities)


@pytest.mark.parametrize("preset", UNIMODAL_PRESETS)
def test_unimodal_presets_use_only_their_modality(preset):
    only = PRESETS[preset].only
    model = tiny(preset)  # every modality offered: the baseline ignores the others
    assert model.modalities == (only,)
    assert model(make_batch()).shape == (B, NUM_CLASSES)
    others = tuple(m for m in ALL if m != only)
    with pytest.raises(ValueError, match=only):
        tiny(preset, others)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_gradients_reach_every_present_encoder(preset):
    model = tiny(preset)
    batch = make_batch()
    loss = torch.nn.functional.cross_entropy(model(batch), batch["label"])
    loss.backward()
    for m in model.modalities:
        grads = [p.grad for p in model.encoders[m].parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"{preset}: no gradient in the {m} encoder"


def test_low_rank_factors_are_registered_parameters():
    model = tiny("low_rank_tensor", ("image", "text", "audio"), rank=3)
    fusion = model.fusion
    assert isinstance(fusion, LowRankTensorFusion)
    assert len(fusion.factors) == 3 and fusion.factors[0].shape == (3, 16 + 1, 16)
    param_ids = {id(p) for p in model.parameters()}
    assert all(id(f) in param_ids for f in fusion.factors)
    assert sum(k.startswith("fusion.factors.") for k in model.state_dict()) == 3
    model.to(torch.float64)
    assert all(f.dtype == torch.float64 for f in fusion.factors)
    logits = model(make_batch())  # float32 columns in, float64 model: the factors moved with it
    assert logits.dtype == torch.float64
    logits.sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fusion.factors)


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = tiny("cross_transformer", seed=7)
    after = torch.rand(1)
    b = tiny("cross_transformer", seed=7)
    c = tiny("cross_transformer", seed=8)
    assert before == after  # building a model does not consume the caller's random stream
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_unknown_preset_is_named_in_the_error():
    with pytest.raises(ValueError, match="'mega_fusion'"):
        tiny("mega_fusion")


def test_bad_modalities_and_too_long_text_are_errors():
    with pytest.raises(ValueError, match="smell"):
        tiny("late_concat", ("image", "smell"))
    with pytest.raises(ValueError, match="non-empty"):
        tiny("late_concat", ())
    model = tiny("unimodal_text", max_text_len=8)
    with pytest.raises(ValueError, match="max_len 8"):
        model(make_batch())


def test_param_groups_split_parameters_by_modality():
    model = tiny("gated")
    groups = param_groups(model, lr=1e-3, lr_by_modality={"image": 1e-2, "text": 1e-4})
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"image", "text", "audio", "features", "fusion"}
    assert by_name["image"]["lr"] == 1e-2
    assert by_name["text"]["lr"] == 1e-4
    assert by_name["audio"]["lr"] == 1e-3 and by_name["fusion"]["lr"] == 1e-3
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in model.encoders["text"].parameters()} <= {id(p) for p in by_name["text"]["params"]}
    assert {id(p) for p in model.fusion.parameters()} == {id(p) for p in by_name["fusion"]["params"]}
    optimizer = torch.optim.AdamW(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]


def test_param_groups_reject_a_modality_the_model_lacks():
    model = tiny("unimodal_audio")
    with pytest.raises(ValueError, match="image"):
        param_groups(model, lr=1e-3, lr_by_modality={"image": 1e-4})


def test_encoder_sizes_scale_the_encoders():
    counts = {}
    for name, size in ENCODER_SIZES.items():
        model = tiny("late_concat", ("image",), **size)
        assert model(make_batch()).shape == (B, NUM_CLASSES), name
        counts[name] = sum(p.numel() for p in model.encoders["image"].parameters())
    assert counts["small"] < counts["base"] < counts["wide"]
    assert counts["base"] < counts["deep"]


def test_a_batch_without_a_used_modality_column_is_a_clear_error():
    batch = make_batch()
    del batch["attention_mask"]
    with pytest.raises(ValueError, match="attention_mask"):
        tiny("late_concat", ("image", "text"))(batch)

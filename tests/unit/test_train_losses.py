"""Auxiliary unimodal heads and cross-modal contrastive alignment: the losses, the heads, the training step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mm_ray.models import ModelOutput, build_model, training_loss
from mm_ray.models.objectives import aux_loss, info_nce
from mm_ray.train.loop import train_epoch, train_step

B, NUM_CLASSES, SIZE, LENGTH, VOCAB, N_MELS, FRAMES = 6, 3, 16, 8, 50, 8, 10
MODALITIES = ("image", "text", "audio")


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (B, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
        "input_ids": torch.randint(1, VOCAB, (B, LENGTH), generator=g, dtype=torch.int32),
        "attention_mask": torch.ones(B, LENGTH, dtype=torch.int8),
        "audio": torch.randn(B, N_MELS, FRAMES, generator=g) - 8.0,
        "label": torch.randint(0, NUM_CLASSES, (B,), generator=g),
    }


def tiny(preset: str = "late_concat", modalities=MODALITIES, **kwargs):
    args = dict(num_classes=NUM_CLASSES, image_size=SIZE, vocab_size=VOCAB, n_mels=N_MELS)
    args.update(width=8, depth=1, fusion_dim=16, max_text_len=LENGTH)
    return build_model(preset, modalities=modalities, **{**args, **kwargs})


def unit_rows(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_heads_exist_only_when_asked_for_and_forward_still_returns_logits():
    plain, multi = tiny(), tiny(aux_heads=True, align_dim=4)
    assert not list(plain.aux_heads.parameters()) and not list(plain.projections.parameters())
    assert set(multi.aux_heads) == set(multi.projections) == set(MODALITIES)
    batch = make_batch()
    logits = multi(batch)
    assert isinstance(logits, torch.Tensor) and logits.shape == (B, NUM_CLASSES)
    out = multi(batch, with_aux=True)
    assert isinstance(out, ModelOutput) and torch.equal(out.logits, logits)
    assert {m: t.shape for m, t in out.aux_logits.items()} == {m: (B, NUM_CLASSES) for m in MODALITIES}
    for m, z in out.aligned.items():
        assert z.shape == (B, 4) and torch.allclose(z.norm(dim=1), torch.ones(B)), m
    # The plain model's weights are unchanged by the extra heads (they are built last from the seed).
    shared = plain.state_dict()
    assert all(torch.equal(v, multi.state_dict()[k]) for k, v in shared.items())


def test_aux_loss_makes_the_total_larger_and_counts_only_present_rows():
    model = tiny(aux_heads=True)
    batch = make_batch()
    out = model(batch, with_aux=True)
    total, fused = training_loss(out, batch["label"], aux_weight=0.5)
    assert torch.allclose(fused, F.cross_entropy(out.logits, batch["label"]))
    assert total > fused
    expected = sum(F.cross_entropy(out.aux_logits[m], batch["label"]) for m in MODALITIES)
    assert torch.allclose(total, fused + 0.5 * expected)
    # Rows where a modality is absent do not count in its head's loss, whatever that head says there.
    present = {m: torch.ones(B, dtype=torch.bool) for m in MODALITIES}
    present["text"] = torch.tensor([True, True, True, False, False, False])
    wild = {**out.aux_logits, "text": out.aux_logits["text"].clone()}
    wild["text"][3:] = 100.0 * torch.randn(3, NUM_CLASSES)
    text_only = F.cross_entropy(out.aux_logits["text"][:3], batch["label"][:3])
    others = sum(F.cross_entropy(out.aux_logits[m], batch["label"]) for m in ("image", "audio"))
    assert torch.allclose(aux_loss(wild, present, batch["label"]), text_only + others)


def test_aux_heads_send_gradient_to_every_encoder_without_the_fusion():
    model = tiny("gated", aux_heads=True)
    batch = make_batch()
    out = model(batch, with_aux=True)
    cut = ModelOutput(out.logits.detach(), out.embeddings, out.present, out.aux_logits, out.aligned)
    total, _ = training_loss(cut, batch["label"], aux_weight=1.0)
    total.backward()
    assert all(p.grad is None for p in model.fusion.parameters())  # the fused term carried no gradient
    for m in MODALITIES:
        grads = [p.grad for p in model.encoders[m].parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"no gradient in the {m} encoder"


def test_a_positive_weight_without_its_heads_is_an_error_except_alignment_of_one_modality():
    batch = make_batch()
    with pytest.raises(ValueError, match="aux_heads"):
        training_loss(tiny()(batch, with_aux=True), batch["label"], aux_weight=0.1)
    with pytest.raises(ValueError, match="align_dim"):
        training_loss(tiny()(batch, with_aux=True), batch["label"], align_weight=0.1)
    unimodal = tiny("unimodal_text", align_dim=4)
    assert not list(unimodal.projections.parameters())  # nothing to align a single modality with
    out = unimodal(batch, with_aux=True)
    total, fused = training_loss(out, batch["label"], align_weight=0.1)
    assert torch.equal(total, fused)


def test_info_nce_prefers_aligned_pairs_and_sharpens_with_lower_temperature():
    a = unit_rows(16, 8)
    shuffled = a[torch.randperm(16, generator=torch.Generator().manual_seed(1))]
    assert info_nce(a, a, 0.1) < info_nce(a, shuffled, 0.1)
    # Aligned pairs: a lower temperature separates the right pair from the rest more sharply.
    losses = [info_nce(a, a, t).item() for t in (1.0, 0.3, 0.1, 0.03)]
    assert losses == sorted(losses, reverse=True)
    # A very high temperature flattens every softmax: the loss tends to log N.
    assert info_nce(a, a, 1e4).item() == pytest.approx(math.log(16), abs=1e-3)
    b = unit_rows(16, 8, seed=2)
    assert torch.allclose(info_nce(a, b, 0.1), info_nce(b, a, 0.1))  # symmetric


def test_info_nce_uses_only_valid_rows():
    a, b = unit_rows(8, 4), unit_rows(8, 4, seed=3)
    valid = torch.tensor([True, True, False, True, True, False, True, True])
    loss = info_nce(a, b, 0.1, valid)
    assert torch.allclose(loss, info_nce(a[valid], b[valid], 0.1))
    noisy = b.clone()
    noisy[~valid] = unit_rows(2, 4, seed=4)
    assert torch.allclose(info_nce(a, noisy, 0.1, valid), loss)
    one = torch.zeros(8, dtype=torch.bool)
    one[0] = True
    assert info_nce(a, b, 0.1, one).item() == 0.0  # one pair alone has nothing to contrast with


def test_every_head_and_projection_stays_in_the_graph_when_a_modality_is_absent_from_the_batch():
    # DDP all-reduces every parameter's gradient: a head missing from the graph would stall the step.
    model = tiny(aux_heads=True, align_dim=4)
    batch = {**make_batch(), "has_audio": torch.zeros(B, dtype=torch.bool)}
    total, _ = training_loss(model(batch, with_aux=True), batch["label"], aux_weight=0.3, align_weight=0.3)
    assert torch.isfinite(total)
    total.backward()
    for name, module in (("aux_heads", model.aux_heads), ("projections", model.projections)):
        for m in MODALITIES:
            grads = [p.grad for p in module[m].parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads), (name, m)
        assert all(p.grad.abs().sum() == 0 for p in module["audio"].parameters()), name


def test_embed_returns_normalised_aligned_embeddings_and_presence():
    model = tiny(align_dim=4).eval()
    batch = {**make_batch(), "has_text": torch.tensor([True, False] * 3)}
    embedded, present = model.embed(batch)
    assert set(embedded) == set(MODALITIES)
    assert all(e.shape == (B, 4) and torch.allclose(e.norm(dim=1), torch.ones(B)) for e in embedded.values())
    assert present["text"].tolist() == [True, False] * 3 and present["image"].all()
    fallback, _ = tiny().eval().embed(batch)  # no projections: the encoders' own outputs, normalised
    assert all(e.shape == (B, 16) for e in fallback.values())


def test_train_step_reports_the_fused_loss_and_steps_on_the_total():
    batch = make_batch()
    model = tiny(aux_heads=True, align_dim=4)
    before = {k: v.clone() for k, v in model.aux_heads.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        expected = F.cross_entropy(model(batch), batch["label"])
    loss, logits = train_step(
        model,
        batch,
        optimizer,
        grad_clip=None,
        autocast_dtype=None,
        aux_loss_weight=0.3,
        align_loss_weight=0.2,
    )
    assert torch.allclose(loss, expected) and logits.shape == (B, NUM_CLASSES)
    after = model.aux_heads.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the heads were trained
    # Off by default: a heads-less model (or any plain nn.Module) takes the old path.
    loss, _ = train_step(
        tiny(),
        batch,
        optimizer=torch.optim.SGD(tiny().parameters(), lr=0.1),
        grad_clip=None,
        autocast_dtype=None,
    )
    assert torch.isfinite(loss)


def _toy_batches(n_batches: int = 8, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """The label is written into both the image (a bright row) and the text (a class token)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        labels = torch.randint(0, NUM_CLASSES, (16,), generator=g)
        images = torch.randint(0, 60, (16, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
        for i, y in enumerate(labels.tolist()):
            images[i, :, 4 * y : 4 * y + 4] = 250
        ids = torch.randint(10, VOCAB, (16, LENGTH), generator=g, dtype=torch.int32)
        ids[:, 3] = labels + 1
        batches.append(
            {"image": images, "input_ids": ids, "attention_mask": torch.ones(16, LENGTH), "label": labels}
        )
    return batches


def test_a_tiny_model_with_both_extra_losses_still_fits_a_toy_problem():
    torch.manual_seed(0)
    model = tiny("late_concat", ("image", "text"), aux_heads=True, align_dim=8, text_encoder="lstm")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = _toy_batches()
    history = [
        train_epoch(
            model,
            batches,
            optimizer,
            device="cpu",
            aux_loss_weight=0.3,
            align_loss_weight=0.1,
            align_temperature=0.1,
        )
        for _ in range(12)
    ]
    assert history[-1]["loss"] < history[0]["loss"] / 3
    model.eval()
    with torch.no_grad():
        held_out = _toy_batches(2, seed=1)
        correct = sum((model(b).argmax(1) == b["label"]).sum().item() for b in held_out)
    assert correct / 32 > 0.9


def test_loop_config_hands_the_options_to_the_model_and_the_loop():
    from mm_ray.config.load import config_from_dict
    from mm_ray.train.spec import LoopConfig

    shapes = {"image": [3, SIZE, SIZE], "audio": [N_MELS, FRAMES], "input_ids": [LENGTH]}

    def config(*overrides: str) -> LoopConfig:
        cfg = config_from_dict({}, ["model.width=8", "model.depth=1", *overrides])
        return LoopConfig.for_run(
            cfg, shapes=shapes, vocab_size=3, num_classes=NUM_CLASSES, rows=8, has_val=False
        )

    off = config()
    assert not off.model.aux_heads and off.model.align_dim == 0
    assert off.aux_loss_weight == off.align_loss_weight == 0.0
    on = config(
        "model.preset=fixed_weighted",
        "model.text_encoder=lstm",
        "model.bidirectional=false",
        "model.fusion_weights.audio=0.0",
        "model.align_dim=8",
        "train.aux_loss_weight=0.3",
        "train.align_loss_weight=0.2",
        "train.align_temperature=0.05",
    )
    assert (on.aux_loss_weight, on.align_loss_weight, on.align_temperature) == (0.3, 0.2, 0.05)
    model = on.model.build()
    assert not model.encoders["text"].lstm.bidirectional
    assert model.fusion.weights.tolist() == [1.0, 1.0, 0.0]
    assert set(model.aux_heads) == set(MODALITIES)
    assert all(p.out_features == 8 for p in model.projections.values())

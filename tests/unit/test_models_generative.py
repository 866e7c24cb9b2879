"""The generative presets: the product of experts and its KL term against closed forms, subset behaviour of the
multimodal VAE, the conditional GAN's alternating step, and the reported loss terms."""

from __future__ import annotations

import pytest
import torch

from mm_ray.models import build_model, param_groups
from mm_ray.models.mvae import kl_to_standard_normal, product_of_experts
from mm_ray.train.loop import train_epoch

B, SIZE, N_MELS, FRAMES, VOCAB, LENGTH, CLASSES = 6, 16, 8, 11, 40, 7, 3


def _batch(seed: int = 0, **presence: bool | torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "image": torch.randint(0, 256, (B, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
        "input_ids": torch.randint(1, VOCAB, (B, LENGTH), generator=g),
        "attention_mask": torch.ones(B, LENGTH, dtype=torch.long),
        "audio": torch.randn(B, N_MELS, FRAMES, generator=g) - 7.0,
        "label": torch.randint(0, CLASSES, (B,), generator=g),
    }
    for m, value in presence.items():
        batch[f"has_{m}"] = value if isinstance(value, torch.Tensor) else torch.full((B,), value)
    return batch


def _model(preset: str, modalities=("image", "text", "audio"), **kwargs) -> torch.nn.Module:
    return build_model(
        preset, modalities=modalities, num_classes=CLASSES, image_size=SIZE, vocab_size=VOCAB, n_mels=N_MELS,
        audio_frames=FRAMES, width=8, depth=1, fusion_dim=8, max_text_len=LENGTH, **kwargs,
    )  # fmt: skip


def test_product_of_one_expert_is_that_expert() -> None:
    mu, logvar = torch.randn(4, 1, 5), torch.randn(4, 1, 5)
    got_mu, got_logvar = product_of_experts(mu, logvar, torch.ones(4, 1, dtype=torch.bool))
    torch.testing.assert_close(got_mu, mu[:, 0])
    torch.testing.assert_close(got_logvar, logvar[:, 0])


def test_product_of_two_experts_matches_the_closed_form_and_masked_experts_drop_out() -> None:
    m1, m2 = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.5]])
    v1, v2 = torch.tensor([[0.5, 2.0]]), torch.tensor([[1.5, 0.25]])
    mu = torch.stack([m1, m2, torch.full_like(m1, 99.0)], dim=1)
    logvar = torch.stack([v1.log(), v2.log(), torch.zeros_like(m1)], dim=1)
    # The third expert is masked out: it must not move the product.
    got_mu, got_logvar = product_of_experts(mu, logvar, torch.tensor([[True, True, False]]))
    # Product of two Gaussian densities: mean (m1 v2 + m2 v1) / (v1 + v2), variance v1 v2 / (v1 + v2).
    torch.testing.assert_close(got_mu, (m1 * v2 + m2 * v1) / (v1 + v2))
    torch.testing.assert_close(got_logvar.exp(), v1 * v2 / (v1 + v2))


def test_kl_to_the_prior_matches_torch_distributions() -> None:
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    ).sum(dim=-1)
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), expected)


def test_mvae_classifies_from_every_subset_and_ignores_absent_inputs() -> None:
    model = _model("mvae").eval()
    for subset in ({"image"}, {"text"}, {"audio"}, {"image", "text"}, {"image", "text", "audio"}):
        presence = {m: m in subset for m in ("image", "text", "audio")}
        logits = model(_batch(0, **presence))
        assert logits.shape == (B, CLASSES) and torch.isfinite(logits).all()
        # What an absent modality's columns hold cannot change the prediction.
        other = _batch(1, **presence)
        for m, present in presence.items():
            if present:
                columns = {"image": ["image"], "text": ["input_ids", "attention_mask"], "audio": ["audio"]}[m]
                for c in columns:
                    other[c] = _batch(0)[c]
        torch.testing.assert_close(model(other), logits)


def test_mvae_with_no_modality_left_is_the_prior() -> None:
    model = _model("mvae").eval()
    none = model(_batch(0, image=False, text=False, audio=False))
    # Every row then reads the prior's mean (zero): the head's bias alone.
    torch.testing.assert_close(none, model.head.bias.expand(B, CLASSES))


def test_mvae_text_to_image_depends_on_the_text_only() -> None:
    model = _model("mvae").eval()
    a, b = _batch(0), _batch(1)
    b["input_ids"], b["attention_mask"] = a["input_ids"], a["attention_mask"]
    draw = lambda batch: model.generate(batch, target="image", sources=("text",), samples=3,  # noqa: E731
                                        generator=torch.Generator().manual_seed(5))  # fmt: skip
    images = draw(a)
    assert images.shape == (B, 3, 3, SIZE, SIZE) and images.min() >= 0.0 and images.max() <= 1.0
    torch.testing.assert_close(draw(b), images)
    # The batch need not hold the other modalities at all (captions alone, as from a text-only shard).
    torch.testing.assert_close(draw({c: a[c] for c in ("input_ids", "attention_mask")}), images)
    mels = model.generate(a, target="audio", sources=("text", "image"), samples=2)
    assert mels.shape == (B, 2, N_MELS, FRAMES)
    with pytest.raises(ValueError, match="subset"):
        model.generate(a, target="image", sources=("video",))


def test_mvae_reports_its_elbo_terms_and_trains_every_part() -> None:
    torch.manual_seed(0)
    model = _model("mvae", vae_beta=0.1)
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = train_epoch(model, [_batch(0), _batch(1, audio=False)], optimizer, device="cpu")
    assert {"recon_image", "recon_audio", "beta_kl", "subset_ce"} <= set(stats)
    assert all(stats[k] > 0 for k in ("recon_image", "recon_audio", "beta_kl", "subset_ce"))
    moved = {
        n.split(".")[0] + "." + n.split(".")[1]
        for n, p in model.named_parameters()
        if not torch.equal(p, before[n])
    }
    assert {"encoders.image", "encoders.text", "encoders.audio", "decoders.image", "decoders.audio"} <= moved


def test_mvae_kl_term_scales_with_beta() -> None:
    batch = _batch(0)
    terms = {}
    for beta in (0.1, 0.4):
        model = _model("mvae", vae_beta=beta).eval()  # same seed: same weights
        terms[beta] = model(batch, with_aux=True).losses["beta_kl"]
    torch.testing.assert_close(terms[0.4], 4 * terms[0.1])


def test_cgan_step_alternates_discriminator_and_generator_updates() -> None:
    torch.manual_seed(0)
    model = _model("cgan", modalities=("image", "text"))
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-2))
    parts = ("generator", "discriminator", "encoders", "head")
    before = {part: [p.detach().clone() for p in getattr(model, part).parameters()] for part in parts}
    stats = train_epoch(model, [_batch(0)], optimizer, device="cpu")
    assert {"d_loss", "g_loss"} <= set(stats) and stats["samples"] == B
    for part in parts:
        after = list(getattr(model, part).parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before[part], strict=True)), part
    images = model.eval().generate(_batch(0), target="image", sources=("text",), samples=2)
    assert images.shape == (B, 2, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="image from text only"):
        model.generate(_batch(0), target="audio", sources=("text",))


def test_cgan_discriminator_half_leaves_the_generator_alone() -> None:
    from mm_ray.train.adversarial import _step_only

    torch.manual_seed(0)
    model = _model("cgan", modalities=("image", "text"))
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-2))
    generator = [p.detach().clone() for p in model.generator.parameters()]
    # Gradients on every part, as the generator half leaves them; stepping the discriminator only.
    out = model(_batch(0), phase="generator")
    (out["g_loss"] + out["ce"]).backward()
    discriminator = {id(p) for p in model.discriminator.parameters()}
    _step_only(optimizer, lambda p: id(p) in discriminator, grad_clip=1.0)
    assert all(torch.equal(a, b) for a, b in zip(model.generator.parameters(), generator, strict=True))


def test_cgan_needs_image_and_text() -> None:
    with pytest.raises(ValueError, match="image and text"):
        _model("cgan", modalities=("text", "audio"))


def test_cgan_losses_match_a_hand_computation() -> None:
    from mm_ray.models.cgan import discriminator_loss, generator_loss

    matched, wrong, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0]), torch.tensor([0.5, -1.5])
    # hinge: relu(1 - m) + (relu(1 + w) + relu(1 + f)) / 2, row by row
    expected = torch.tensor([0.0 + (0.0 + 1.5) / 2, 0.5 + (1.0 + 0.0) / 2])
    torch.testing.assert_close(discriminator_loss(matched, wrong, fake, "hinge"), expected)
    torch.testing.assert_close(generator_loss(fake, "hinge"), torch.tensor([-0.5, 1.5]))
    logistic = discriminator_loss(matched, wrong, fake, "logistic")
    sp = torch.nn.functional.softplus
    torch.testing.assert_close(logistic, sp(-matched) + 0.5 * (sp(wrong) + sp(fake)))
    torch.testing.assert_close(generator_loss(fake, "logistic"), sp(-fake))


def test_cgan_discriminator_is_spectrally_normalised() -> None:
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    model = _model("cgan", modalities=("image", "text"))
    d = model.discriminator
    layers = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(layers) == 5 and all(parametrize.is_parametrized(m, "weight") for m in layers)
    for _ in range(30):  # power iteration converges as the discriminator is called in training mode
        d(torch.rand(B, 3, SIZE, SIZE), torch.randn(B, 8))
    assert abs(torch.linalg.matrix_norm(d.score.weight, ord=2).item() - 1.0) < 1e-3


def test_cgan_matching_term_is_the_caption_cross_entropy_over_present_rows() -> None:
    from mm_ray.models.cgan import _match_loss

    rows = torch.tensor([1.0, 1.0, 1.0, 0.0])
    # Equal projections: every present caption equally likely, so ln(3) (the absent row is no candidate).
    torch.testing.assert_close(_match_loss(torch.zeros(4, 4), rows), torch.tensor(3.0).log())
    pairs = torch.eye(4) * 5.0  # each image projects onto its own caption
    expected = -torch.log_softmax(torch.tensor([5.0, 0.0, 0.0]), 0)[0]
    torch.testing.assert_close(_match_loss(pairs, rows), expected)


def test_cgan_discriminator_half_trains_the_text_condition_only_when_asked() -> None:
    for learn in (True, False):
        torch.manual_seed(0)
        model = _model("cgan", modalities=("image", "text"))
        model.learn_condition = learn
        out = model(_batch(0), phase="discriminator")
        assert {"d_loss", "d_match"} <= set(out)
        out["d_loss"].backward()
        text = [p.grad for p in model.encoders["text"].parameters()]
        assert all(g is not None for g in text) == learn and all(g is None for g in text) != learn
        assert all(p.grad is None for p in model.generator.parameters())
        side = {id(p) for p in model.discriminator_side()}
        assert (id(next(model.encoders["text"].parameters())) in side) == learn


def test_cgan_generator_is_rewarded_for_drawing_its_own_caption() -> None:
    torch.manual_seed(0)
    model = _model("cgan", modalities=("image", "text"))
    out = model(_batch(0), phase="generator")
    assert {"g_loss", "g_match", "ce", "logits"} <= set(out)
    model.match_weight = 0.0
    torch.manual_seed(1)
    plain = model(_batch(0), phase="generator")
    assert "g_match" not in plain


def test_cgan_refuses_weights_of_the_old_discriminator() -> None:
    torch.manual_seed(0)
    model = _model("cgan", modalities=("image", "text"))
    state = model.state_dict()
    model.load_state_dict(state)  # its own weights load
    state = {k.replace("score.parametrizations.weight.original", "score.weight"): v for k, v in state.items()}
    with pytest.raises(ValueError, match="predates the spectrally normalised"):
        model.load_state_dict(state)


def test_cgan_mode_seeking_term_is_the_inverse_spread_of_two_draws() -> None:
    torch.manual_seed(0)
    model = _model("cgan", modalities=("image", "text"))
    out = {}
    for weight in (0.0, 0.5):
        model.mode_seeking = weight
        torch.manual_seed(1)  # the same first draw of noise, so the same adversarial and matching terms
        out[weight] = model(_batch(0), phase="generator")
    spread = out[0.5]["g_spread"]
    assert "g_spread" not in out[0.0] and spread > 0
    torch.testing.assert_close(out[0.5]["g_loss"] - out[0.0]["g_loss"], 0.5 / (spread + 1e-5))

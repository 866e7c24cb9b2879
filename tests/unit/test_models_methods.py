"""The LSTM text encoder and fixed-weight fusion: shapes, masks, weights, and every preset with an LSTM."""

from __future__ import annotations

import pytest
import torch

from mm_ray.models import PRESETS, LSTMTextEncoder, build_model
from mm_ray.models.fusion import FixedWeightedFusion

B, NUM_CLASSES, SIZE, LENGTH, VOCAB, N_MELS, FRAMES = 4, 5, 32, 16, 100, 16, 26
FEAT = 12
ALL = ("image", "text", "audio", "features")
"""Every built-in modality: the features vector (an embedding computed elsewhere) too."""


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([16, 5, 1, 0])  # the last row has no text tokens at all
    return {
        "image": torch.randint(0, 256, (B, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
        "input_ids": torch.randint(1, VOCAB, (B, LENGTH), generator=g, dtype=torch.int32),
        "attention_mask": (torch.arange(LENGTH) < lengths[:, None]).to(torch.int8),
        "audio": torch.randn(B, N_MELS, FRAMES, generator=g) - 8.0,
        "features": torch.randn(B, FEAT, generator=g),
        "label": torch.randint(0, NUM_CLASSES, (B,), generator=g),
    }


def tiny(preset: str, modalities=ALL, **kwargs):
    args = dict(num_classes=NUM_CLASSES, image_size=SIZE, vocab_size=VOCAB, n_mels=N_MELS)
    args["shapes"] = {"features": (FEAT,)}
    args.update(width=16, depth=1, fusion_dim=16, max_text_len=LENGTH)
    return build_model(preset, modalities=modalities, **{**args, **kwargs})


def lstm_encoder(**kwargs) -> LSTMTextEncoder:
    torch.manual_seed(0)
    return LSTMTextEncoder(**{"vocab_size": VOCAB, "dim": 8, "depth": 2, "out_dim": 12, **kwargs}).eval()


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("depth", [0, 1, 2])
def test_lstm_encoder_gives_one_finite_vector_per_row(bidirectional, depth):
    batch = make_batch()
    encoder = lstm_encoder(bidirectional=bidirectional, depth=depth)
    out = encoder(batch["input_ids"], batch["attention_mask"])
    assert out.shape == (B, 12)
    assert torch.isfinite(out).all()  # the row without any token too
    if depth:
        assert encoder.lstm.bidirectional == bidirectional


@pytest.mark.parametrize("bidirectional", [True, False])
def test_lstm_encoder_ignores_padding(bidirectional):
    batch = make_batch()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    encoder = lstm_encoder(bidirectional=bidirectional)
    with torch.no_grad():
        reference = encoder(ids, mask)
        # Other ids under the padding: the same output.
        repadded = torch.where(mask.bool(), ids, torch.randint_like(ids, 1, VOCAB))
        assert torch.allclose(encoder(repadded, mask), reference, atol=1e-6)
        # Twice as much padding (as a longer max_length would give): the same output.
        longer = encoder(
            torch.cat([ids, torch.zeros_like(ids)], 1),
            torch.cat([mask, torch.zeros_like(mask)], 1),
        )
        assert torch.allclose(longer, reference, atol=1e-6)
        # Padding in front of the tokens instead of after them: the same output.
        row = ids[1:2]
        left = encoder(
            torch.cat([torch.zeros(1, 11, dtype=row.dtype), row[:, :5]], 1), torch.arange(16)[None] >= 11
        )
        assert torch.allclose(left, reference[1:2], atol=1e-6)
        # ... while a real token does count.
        changed = ids.clone()
        changed[1, 2] = (changed[1, 2] % (VOCAB - 1)) + 1
        assert not torch.allclose(encoder(changed, mask)[1], reference[1], atol=1e-4)


def test_lstm_encoder_rejects_text_longer_than_max_len():
    batch = make_batch()
    with pytest.raises(ValueError, match="max_len 8"):
        lstm_encoder(max_len=8)(batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_runs_with_the_lstm_text_encoder(preset):
    model = tiny(preset, text_encoder="lstm")
    batch = make_batch()
    logits = model(batch)
    assert logits.shape == (B, NUM_CLASSES) and torch.isfinite(logits).all()
    if "text" in model.modalities:
        assert isinstance(model.encoders["text"], LSTMTextEncoder)
        torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
        grads = [p.grad for p in model.encoders["text"].parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"{preset}: no gradient in the LSTM"


def test_lstm_bidirectional_flag_reaches_the_encoder_and_unknown_encoders_are_errors():
    assert (
        not tiny("late_concat", text_encoder="lstm", bidirectional=False).encoders["text"].lstm.bidirectional
    )
    assert tiny("late_concat", text_encoder="lstm").encoders["text"].lstm.bidirectional
    with pytest.raises(ValueError, match="'gru'"):
        tiny("late_concat", text_encoder="gru")


def _pooling(weights: dict[str, float]) -> FixedWeightedFusion:
    """A fixed-weight fusion whose head is the identity: its output is the weighted sum itself."""
    fusion = FixedWeightedFusion(modalities=tuple(weights), dim=1, hidden=1, num_classes=1, weights=weights)
    fusion.head = torch.nn.Identity()
    return fusion


def test_fixed_weights_are_applied_and_renormalised_over_present_modalities():
    fusion = _pooling({"image": 1.0, "text": 3.0, "audio": 0.0})
    emb = {
        "image": torch.full((4, 1), 1.0),
        "text": torch.full((4, 1), 0.0),
        "audio": torch.full((4, 1), 5.0),
    }
    present = {
        "image": torch.tensor([True, True, False, False]),
        "text": torch.tensor([True, False, True, False]),
        "audio": torch.tensor([True, True, True, True]),
    }
    out = fusion(emb, present).squeeze(1)
    # Row 0: (1*1 + 3*0) / 4; row 1: image alone; row 2: text alone; row 3: only the 0-weight audio,
    # which then stands alone rather than giving 0/0.
    assert torch.allclose(out, torch.tensor([0.25, 1.0, 0.0, 5.0]))
    assert "weights" in dict(fusion.named_buffers()) and not list(fusion.parameters())


def test_fixed_weighted_model_output_does_not_depend_on_a_zero_weight_modality():
    batch, other = make_batch(0), make_batch(1)
    muted = tiny("fixed_weighted", fusion_weights={"audio": 0.0})
    heard = tiny("fixed_weighted")  # every modality weighs 1.0
    swapped = {**batch, "audio": other["audio"]}
    with torch.no_grad():
        assert muted(batch).shape == (B, NUM_CLASSES)
        assert torch.allclose(muted(swapped), muted(batch), atol=1e-6)
        assert not torch.allclose(heard(swapped), heard(batch), atol=1e-4)
        # Other weights, other outputs from the same seed's identical parameters.
        text_heavy = tiny("fixed_weighted", fusion_weights={"text": 5.0})
        assert not torch.allclose(text_heavy(batch), heard(batch), atol=1e-4)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"smell": 1.0}, "smell"),
        ({"image": -1.0}, ">= 0"),
        ({"image": 0.0, "text": 0.0, "audio": 0.0}, "at least one > 0"),
    ],
)
def test_bad_fusion_weights_are_errors(weights, message):
    with pytest.raises(ValueError, match=message):
        tiny("fixed_weighted", ("image", "text", "audio"), fusion_weights=weights)


def test_fusion_weights_of_modalities_the_model_lacks_are_ignored():
    model = tiny("fixed_weighted", ("image", "text"), fusion_weights={"audio": 0.0, "text": 2.0})
    assert model.fusion.weights.tolist() == [1.0, 2.0]

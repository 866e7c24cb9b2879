"""The one function that turns logits into prediction columns, and the fused embedding hook (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mm_ray.inference.outputs import EMBEDDING, fused_embeddings, prediction_columns
from mm_ray.models import build_model


def test_class_names_or_ids_and_probabilities() -> None:
    logits = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 1.0]])
    expected = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(axis=1, keepdims=True)
    named = prediction_columns(logits, ["cat", "dog", "eel"])
    assert named["predicted"].tolist() == ["dog", "cat"]
    np.testing.assert_allclose(named["probabilities"], expected, rtol=1e-6)
    assert prediction_columns(logits)["predicted"].tolist() == [1, 0]


def test_the_fused_embedding_is_the_heads_input_and_additive_has_none() -> None:
    kwargs = dict(modalities=("image", "text"), num_classes=3, image_size=16, vocab_size=30, max_text_len=8,
                  width=8, depth=1, fusion_dim=8)  # fmt: skip
    model = build_model("late_concat", **kwargs).eval()
    batch = {"image": torch.rand(2, 3, 16, 16), "input_ids": torch.randint(0, 30, (2, 8)),
             "attention_mask": torch.ones(2, 8, dtype=torch.int64)}  # fmt: skip
    with torch.no_grad(), fused_embeddings(model) as captured:
        logits = model(batch)
    head = model.fusion.head[-1]
    torch.testing.assert_close(
        head(captured[EMBEDDING]), logits
    )  # what the last layer turned into the logits
    additive = build_model("additive", **kwargs)
    with pytest.raises(ValueError, match="no single classifier head"), fused_embeddings(additive):
        pass


def test_predict_and_serve_follow_the_run_s_task() -> None:
    from mm_ray.config.schema import TaskConfig

    logits = torch.tensor([[2.0, -2.0, 0.5], [-1.0, 1.0, -3.0]])
    tags = prediction_columns(logits, ["a", "b", "c"], TaskConfig(kind="multilabel", threshold=0.5))
    # Independent: a tag is chosen where its sigmoid is >= 0.5, i.e. its logit >= 0.
    assert tags["predicted_tags"] == [["a", "c"], ["b"]]
    np.testing.assert_allclose(tags["probabilities"], 1 / (1 + np.exp(-logits.numpy())), rtol=1e-6)
    task = TaskConfig(
        kind="regression", targets=["age", "price"], target_mean=[30.0, 100.0], target_std=[10.0, 5.0]
    )
    values = prediction_columns(logits[:, :2], None, task)
    # De-standardised: mean + std * output.
    np.testing.assert_allclose(values["predicted"], [[50.0, 90.0], [20.0, 105.0]], rtol=1e-6)
    np.testing.assert_allclose(values["predicted_price"], [90.0, 105.0], rtol=1e-6)

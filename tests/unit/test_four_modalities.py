"""Four modalities (image, text, audio and a precomputed ``features`` vector) through the parts that iterate the
registry: every-subset evaluation (15 subsets), subset dropout (14 proper subsets), a Tune space searching the
features encoder's learning rate and its baseline, and retrieval pairs with the features embedding.

The expected subsets come from ``itertools`` here, never from the registry under test; the expected scores from
a plain loop over hand-masked batches and a plain ranking loop.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mm_ray.config.load import load_config
from mm_ray.modalities import BUILTIN, modalities_of
from mm_ray.models import build_model, drop_to_subsets
from mm_ray.models.groups import param_groups
from mm_ray.retrieval.metrics import parse_pairs, retrieval_scores
from mm_ray.train.metrics import evaluate_subsets
from mm_ray.tune.space import parse_space
from mm_ray.tune.trainable import trial_config

FOUR = ("image", "text", "audio", "features")
COLUMNS = {
    "image": ("image",),
    "text": ("input_ids", "attention_mask"),
    "audio": ("audio",),
    "features": ("features",),
}
"""The model-ready columns of each modality, written out here."""
B, SIZE, LENGTH, VOCAB, N_MELS, FRAMES, FEAT = 24, 16, 8, 50, 8, 12, 6
FOUR_MODALITIES = ["data.modalities=[image,text,audio,features]", f"features.shape=[{FEAT}]"]


def every_subset(names) -> list[str]:
    return ["+".join(c) for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (B, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
        "input_ids": torch.randint(1, VOCAB, (B, LENGTH), generator=g, dtype=torch.int32),
        "attention_mask": torch.ones(B, LENGTH, dtype=torch.int8),
        "audio": torch.randn(B, N_MELS, FRAMES, generator=g) - 8.0,
        "features": torch.randn(B, FEAT, generator=g),
        "label": torch.randint(0, 3, (B,), generator=g),
        **{f"has_{m}": torch.ones(B, dtype=torch.bool) for m in FOUR},
    }


SHAPES = {
    "image": (3, SIZE, SIZE),
    "input_ids": (LENGTH,),
    "attention_mask": (LENGTH,),
    "audio": (N_MELS, FRAMES),
    "features": (FEAT,),
}


def model(preset: str = "late_concat", modalities=FOUR, **kwargs) -> torch.nn.Module:
    return build_model(
        preset,
        modalities=modalities,
        num_classes=3,
        shapes=SHAPES,
        vocab_size=VOCAB,
        width=8,
        depth=1,
        fusion_dim=8,
        **kwargs,
    ).eval()


def test_every_subset_evaluation_scores_all_15_subsets_of_four_modalities() -> None:
    reg = modalities_of(load_config(None, FOUR_MODALITIES))
    assert reg.names == FOUR
    net, data = model(), batch()
    results = evaluate_subsets(net, [data], registry=reg)
    assert list(results) == every_subset(FOUR) and len(results) == 2**4 - 1
    for subset, scores in results.items():
        # The data plane's "absent": presence False and zeros in the modality's columns.
        masked = dict(data)
        for m in set(FOUR) - set(subset.split("+")):
            masked[f"has_{m}"] = torch.zeros(B, dtype=torch.bool)
            for column in COLUMNS[m]:
                masked[column] = torch.zeros_like(data[column])
        with torch.no_grad():
            logits = net(masked)
        assert scores["samples"] == B
        assert scores["accuracy"] == pytest.approx((logits.argmax(1) == data["label"]).float().mean().item())
        assert scores["loss"] == pytest.approx(F.cross_entropy(logits, data["label"]).item(), rel=1e-5)
    # The subsets differ: what the features vector adds shows up in the scores.
    assert results["features"]["loss"] != results["image"]["loss"]


def test_subset_dropout_with_four_modalities_draws_each_of_the_14_proper_subsets_equally() -> None:
    proper = [
        tuple(i in chosen for i in range(4))
        for k in (1, 2, 3)
        for chosen in itertools.combinations(range(4), k)
    ]
    assert len(proper) == 14
    n, p = 140_000, 0.7
    present = torch.ones(n, 4, dtype=torch.bool)
    seen = Counter(tuple(r) for r in drop_to_subsets(present, p, torch.Generator().manual_seed(1)).tolist())
    assert set(seen) == {(True,) * 4, *proper}
    assert seen[(True,) * 4] / n == pytest.approx(1 - p, abs=0.006)
    for subset in proper:  # p / 14 = 0.05 each; the binomial standard error is 0.0006
        assert seen[subset] / n == pytest.approx(p / 14, abs=0.003), subset


def test_a_four_modality_model_trains_on_every_proper_subset_under_subset_dropout() -> None:
    net = model("late_concat", subset_dropout=1.0).train()
    shown: list[torch.Tensor] = []
    net.fusion.register_forward_pre_hook(
        lambda _m, args: shown.append(torch.stack(list(args[1].values()), 1))
    )
    data = batch()
    for _ in range(20):
        net(data)
    rows = Counter(tuple(r) for r in torch.cat(shown).tolist())
    assert len(rows) == 14 and (True,) * 4 not in rows  # every proper subset, never all four
    assert min(rows.values()) > 0.5 * sum(rows.values()) / 14


def test_a_tune_space_searches_the_features_learning_rate_and_baseline() -> None:
    space = parse_space(
        {
            "model.preset": {"choice": ["unimodal_features", "late_concat"]},
            "train.lr_by_modality.features": {"loguniform": [1.0e-4, 1.0e-2]},
            "train.lr_by_modality.text": {"loguniform": [1.0e-4, 1.0e-2]},
        },
        registry=BUILTIN,
    )
    base = load_config(None, [*FOUR_MODALITIES, "train.lr=0.001"])
    sampled = {"train.lr_by_modality.features": 0.004, "train.lr_by_modality.text": 0.0002}
    baseline = trial_config(base, space, {"model.preset": "unimodal_features", **sampled}, "t0")
    fusion = trial_config(base, space, {"model.preset": "late_concat", **sampled}, "t1")
    # The baseline has only the features encoder: the text rate is dropped, the features rate kept.
    assert baseline.model.preset == "unimodal_features" and baseline.train.lr_by_modality == {
        "features": 0.004
    }
    assert fusion.train.lr_by_modality == {"features": 0.004, "text": 0.0002}
    for cfg in (baseline, fusion):
        modalities = (cfg.model.preset.removeprefix("unimodal_"),) if "unimodal" in cfg.model.preset else FOUR
        net = model(cfg.model.preset, modalities)
        lrs = {g["name"]: g["lr"] for g in param_groups(net, cfg.train.lr, cfg.train.lr_by_modality)}
        assert lrs["features"] == 0.004
        assert lrs.get("text", 0.0002) == 0.0002 and lrs["fusion"] == 0.001


def _recall_at_1(queries: np.ndarray, gallery: np.ndarray) -> float:
    """Share of queries whose own item scores strictly above every other item (ties count against it)."""
    hits = 0
    for i, q in enumerate(queries):
        scores = [float(np.dot(q, g)) for g in gallery]
        hits += all(scores[i] > s for j, s in enumerate(scores) if j != i)
    return hits / len(queries)


def test_retrieval_pairs_with_the_features_embedding() -> None:
    cfg = load_config(None, [*FOUR_MODALITIES, "embed.pairs=[features->text, image->features]"])
    pairs = parse_pairs(cfg.embed.pairs)
    net, data = model("late_concat", align_dim=8), batch(3)
    # Half the samples lack text: a pair scores only samples holding both of its modalities.
    data["has_text"] = torch.arange(B) % 2 == 0
    with torch.no_grad():
        embeddings, present = net.embed(data)
    embeddings = {m: e.numpy() for m, e in embeddings.items()}
    present = {m: p.numpy() for m, p in present.items()}
    records = retrieval_scores(
        embeddings, present, data["label"].numpy(), pairs=pairs, ks=(1,), gallery_size=6
    )
    assert [(r["query"], r["gallery"]) for r in records] == [("features", "text"), ("image", "features")]
    with_text = np.flatnonzero(present["text"])
    expected = {
        ("features", "text"): (with_text, "features", "text"),
        ("image", "features"): (np.arange(B), "image", "features"),
    }
    for record in records:
        rows, query, gallery = expected[(record["query"], record["gallery"])]
        assert record["queries"] == len(rows) and record["galleries"] == len(rows) // 6
        recalls = [
            _recall_at_1(embeddings[query][rows][s : s + 6], embeddings[gallery][rows][s : s + 6])
            for s in range(0, len(rows), 6)
        ]
        assert record["recall@1"] == pytest.approx(np.mean(recalls))

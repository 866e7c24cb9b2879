"""Cross-modal retrieval metrics (``mm_ray.retrieval.metrics``) on hand-built embeddings with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mm_ray.config.schema import EmbedConfig
from mm_ray.retrieval.embed import embedder_resources
from mm_ray.retrieval.metrics import gallery_slices, pair_ranks, parse_pairs, retrieval_scores, similarities


def unit_rows(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_pairs_parse_and_bad_ones_are_named() -> None:
    assert parse_pairs(["image->text", " audio -> text "]) == [("image", "text"), ("audio", "text")]
    for bad in ("image", "image->", "text->text"):
        with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
            parse_pairs([bad])


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [
        (10, 4, [(0, 4), (4, 10)]),  # the short remainder joins the last gallery
        (8, 4, [(0, 4), (4, 8)]),
        (3, 4, [(0, 3)]),  # fewer samples than a gallery: one smaller gallery
        (0, 4, []),
    ],
)
def test_gallery_slices_cover_every_sample_once(n: int, size: int, expected: list[tuple[int, int]]) -> None:
    assert [(s.start, s.stop) for s in gallery_slices(n, size)] == expected


def test_pair_ranks_count_ties_against_the_query() -> None:
    queries = np.eye(3, dtype=np.float32)
    gallery = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    # Query 0 ties with item 1 (rank 1), query 1's own item scores 0 and ties with item 2 (rank 2).
    assert pair_ranks(similarities(queries, gallery)).tolist() == [1, 2, 0]
    # A constant embedding says nothing: every query ranks last, not first.
    constant = np.ones((4, 2), dtype=np.float32)
    assert pair_ranks(similarities(constant, constant)).tolist() == [3, 3, 3, 3]


def test_identical_embeddings_retrieve_their_pair_and_unrelated_ones_score_chance() -> None:
    n, labels = 2000, np.arange(2000) % 4
    aligned = unit_rows(n)
    present = {m: np.ones(n, bool) for m in ("image", "audio", "text")}
    embeddings = {"image": aligned, "text": aligned, "audio": unit_rows(n, seed=1)}
    pairs = [("image", "text"), ("audio", "text")]
    image, audio = retrieval_scores(embeddings, present, labels, pairs=pairs, ks=(1, 5), gallery_size=100)
    assert (image["query"], image["gallery"], image["galleries"], image["gallery_size"]) == (
        "image",
        "text",
        20,
        100,
    )
    assert image["recall@1"] == image["recall@5"] == image["class@1"] == 1.0
    assert image["chance"] == {"recall@1": 0.01, "recall@5": 0.05, "class@1": 0.25}
    # Random audio embeddings: recall near k / 100, class match near 1/4 (2,000 queries: +-0.01).
    assert abs(audio["recall@1"] - 0.01) < 0.01 and abs(audio["recall@5"] - 0.05) < 0.02
    assert abs(audio["class@1"] - 0.25) < 0.04


def test_only_samples_holding_both_modalities_are_queried() -> None:
    n = 10
    rows = unit_rows(n)
    present = {"image": np.arange(n) < 6, "text": np.arange(n) % 2 == 0}
    (record,) = retrieval_scores(
        {"image": rows, "text": rows}, present, np.zeros(n, int), pairs=[("image", "text")]
    )
    assert record["queries"] == 3  # samples 0, 2, 4
    assert record["recall@1"] == 1.0 and record["chance"]["class@1"] == 1.0


def test_a_pair_the_model_lacks_is_skipped_and_no_common_samples_give_nan() -> None:
    rows = unit_rows(4)
    present = {"image": np.ones(4, bool), "text": np.zeros(4, bool)}
    pairs = [("image", "text"), ("audio", "text")]
    (record,) = retrieval_scores(
        {"image": rows, "text": rows}, present, np.arange(4), pairs=pairs
    )  # audio->text skipped
    assert record["queries"] == 0 and np.isnan(record["recall@1"])


def test_embedding_actors_take_a_gpu_only_where_the_cluster_has_one() -> None:
    assert embedder_resources(EmbedConfig(), cluster_gpus=0) == {"num_cpus": 0.5, "num_gpus": 0.0}
    assert embedder_resources(EmbedConfig(), cluster_gpus=2) == {"num_cpus": 0.5, "num_gpus": 1.0}
    assert embedder_resources(EmbedConfig(num_gpus=0.5), cluster_gpus=0)["num_gpus"] == 0.5


def test_mm_ray_embed_names_a_path_that_is_not_a_checkpoint(tmp_path, capsys) -> None:
    from mm_ray.cli.main import main

    assert main(["embed", str(tmp_path), "shards/val-000000.tar", "embed.gallery_size=10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mm-ray embed: ") and str(tmp_path) in err

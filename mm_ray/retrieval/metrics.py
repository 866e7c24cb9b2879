"""Cross-modal retrieval metrics on per-modality embeddings: recall@k of the paired item, class match@1.

    scores = retrieval_scores(embeddings, present, labels, pairs=[("image", "text")], ks=(1, 5), gallery_size=1000)
    scores[0]  # {"query": "image", "gallery": "text", "queries": 4000, "galleries": 4, "recall@1": 0.31, ...}

``embeddings[m]`` is float32 ``[N, D]`` (L2-normalised, row i = sample i), ``present[m]`` bool ``[N]``, ``labels``
int ``[N]``. For a pair (query q, gallery g) only samples holding both modalities take part. They are cut, in
order, into galleries of ``gallery_size`` samples (the usual "1K test set" protocol; the remainder joins the
last gallery) so the numbers do not depend on how many samples were embedded. In each gallery every query is
scored against every gallery item by cosine similarity:

- ``recall@k``: the fraction of queries whose own pair (the same sample's g embedding) ranks in the top k;
  chance is ``k / gallery_size``. Ties are broken against the query (a constant embedding scores chance).
- ``class@1``: the fraction of queries whose top-1 item has the query's class label; chance is
  ``sum_c p_c**2``, the probability that a random item shares the query's class.

Both are averaged over queries (every gallery weighs by its size). ``chance`` holds each metric's value for
embeddings with no information, so a table can show both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mm_ray.tables import format_table


def parse_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """``["image->text", ...]`` -> ``[("image", "text"), ...]``; ValueError naming a malformed entry."""
    parsed = []
    for pair in pairs:
        query, arrow, gallery = pair.partition("->")
        if not arrow or not query.strip() or not gallery.strip() or query.strip() == gallery.strip():
            raise ValueError(
                f"retrieval pair {pair!r}: write QUERY->GALLERY with two modalities, e.g. image->text"
            )
        parsed.append((query.strip(), gallery.strip()))
    return parsed


def gallery_slices(n: int, gallery_size: int) -> list[slice]:
    """Consecutive slices of ``n`` items, ``gallery_size`` each; a short remainder joins the last one."""
    if gallery_size < 2:
        raise ValueError(f"gallery_size must be at least 2, got {gallery_size}")
    starts = list(range(0, n - gallery_size + 1, gallery_size)) or [0]
    ends = [*starts[1:], n]
    return [slice(s, e) for s, e in zip(starts, ends, strict=True) if e > s]


def similarities(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Dot products ``[queries, gallery]`` (cosine similarity of L2-normalised rows), float32."""
    return queries.astype(np.float32) @ gallery.astype(np.float32).T


def pair_ranks(similarity: np.ndarray) -> np.ndarray:
    """Rank (0 = top) of each query's own pair (the same row's item) in ``similarity``; ties count against it."""
    own = np.diagonal(similarity)[:, None]
    return (similarity >= own).sum(axis=1) - 1


def top1_class_match(similarity: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each query's most similar gallery item has the query's label (bool ``[n]``)."""
    return labels[similarity.argmax(axis=1)] == labels


def retrieval_scores(
    embeddings: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    pairs: Sequence[tuple[str, str]],
    ks: Sequence[int] = (1, 5),
    gallery_size: int = 1000,
) -> list[dict[str, Any]]:
    """One record per pair (see the module docstring); pairs with a modality the model lacks are skipped."""
    labels = np.asarray(labels)
    # class@1 needs one class per sample: tag sets and regression targets have none.
    by_class = labels.ndim == 1
    records = []
    for query, target in pairs:
        if query not in embeddings or target not in embeddings:
            continue
        both = np.flatnonzero(np.asarray(present[query], bool) & np.asarray(present[target], bool))
        q, g, y = embeddings[query][both], embeddings[target][both], labels[both]
        slices = gallery_slices(len(both), gallery_size)
        ranks, matches = [np.zeros(0, int)], [np.zeros(0, bool)]
        for gallery in slices:
            similarity = similarities(q[gallery], g[gallery])  # once per gallery, for both metrics
            ranks.append(pair_ranks(similarity))
            if by_class:
                matches.append(top1_class_match(similarity, y[gallery]))
        ranks, matches = np.concatenate(ranks), np.concatenate(matches)
        record: dict[str, Any] = {
            "query": query,
            "gallery": target,
            "queries": len(both),
            "galleries": len(slices),
            "gallery_size": len(both) // len(slices) if slices else 0,
        }
        for k in ks:
            record[f"recall@{k}"] = _mean(ranks < k)
        if by_class:
            record["class@1"] = _mean(matches)
        record["chance"] = _chance(record["gallery_size"], y if by_class else None, ks)
        records.append(record)
    return records


def _mean(hits: np.ndarray) -> float:
    return float(hits.mean()) if len(hits) else float("nan")


def _chance(gallery_size: int, labels: np.ndarray | None, ks: Sequence[int]) -> dict[str, float]:
    chance = {f"recall@{k}": min(k / gallery_size, 1.0) if gallery_size else float("nan") for k in ks}
    if labels is None:
        return chance
    shares = np.bincount(labels) / len(labels) if len(labels) else np.zeros(1)
    chance["class@1"] = float((shares**2).sum())
    return chance


def retrieval_table(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """One row per run and direction: recall@k and class@1, each with its chance value in brackets."""
    records = [(name, r) for name, scores in runs.items() for r in scores]
    if not records:
        return "(no retrieval direction applies: the models lack the modalities of embed.pairs)"
    metrics = list(records[0][1]["chance"])
    header = ["run", "direction", "queries", "gallery", *metrics]
    rows = [
        [
            name,
            f"{r['query']}->{r['gallery']}",
            r["queries"],
            r["gallery_size"],
            *(f"{r[m]:.3f} ({r['chance'][m]:.3f})" for m in metrics),
        ]
        for name, r in records
    ]
    return format_table(header, rows)

"""Evaluation: triplet accuracy, and retrieval MRR@10 / recall@1 / nDCG@10 for (query,
document) pairs; for Matryoshka models also at each truncated width (:func:`evaluate_at_dims`).

Ties count against the model (a strict ``>`` for triplets, a pessimistic rank for
retrieval): a collapsed model that maps every text to the same vector scores 0 accuracy and
the worst rank, never a perfect score.

The retrieval metrics are also given per query (:func:`per_query_metrics`): a paired test
of two models (:mod:`embedding.evaluation.compare`) resamples queries, so it needs each query's score,
not only the mean.

Works with anything that has ``encode(texts) -> unit vectors`` (an :class:`Encoder`, a
combined encoder, or a stub in tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def triplet_accuracy(encoder: Any, triplets: Sequence[Sequence[str]]) -> float:
    """Share of triplets where cos(anchor, positive) > cos(anchor, negative), strictly."""
    if not triplets:
        raise ValueError("triplet accuracy of no triplets is undefined")
    anchors, positives, negatives = (
        np.asarray(encoder.encode([t[i] for t in triplets]), dtype=np.float64) for i in range(3)
    )
    pos = (anchors * positives).sum(axis=1)
    neg = (anchors * negatives).sum(axis=1)
    return float((pos > neg).mean())


def retrieval_ranks(encoder: Any, pairs: Sequence[Sequence[str]]) -> np.ndarray:
    """Each query's rank (1 = best) of its gold document among all distinct documents.

    Pessimistic on ties: a document scoring exactly as high as the gold one ranks above it.
    """
    if not pairs:
        raise ValueError("retrieval metrics of no pairs are undefined")
    documents = list(dict.fromkeys(p[1] for p in pairs))
    index = {doc: i for i, doc in enumerate(documents)}
    gold = np.array([index[p[1]] for p in pairs])
    queries = np.asarray(encoder.encode([p[0] for p in pairs]), dtype=np.float64)
    docs = np.asarray(encoder.encode(documents), dtype=np.float64)
    scores = queries @ docs.T
    gold_scores = scores[np.arange(len(pairs)), gold]
    return (scores >= gold_scores[:, None]).sum(axis=1)  # the gold document counts itself


def per_query_metrics(ranks: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """Each query's score from the rank of its gold document; the mean of each is the metric.

    ``mrr@k``: the reciprocal rank, 0 past rank k. ``recall@1``: 1 if the gold document is
    first (hit@1). ``ndcg@k``: with one relevant document the ideal DCG is 1, so nDCG is
    1 / log2(rank + 1), 0 past rank k.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranks = np.asarray(ranks, dtype=np.float64)
    inside = ranks <= k
    return {
        f"mrr@{k}": np.where(inside, 1.0 / ranks, 0.0),
        "recall@1": (ranks == 1).astype(np.float64),
        f"ndcg@{k}": np.where(inside, 1.0 / np.log2(ranks + 1.0), 0.0),
    }


def retrieval_scores(
    encoder: Any, pairs: Sequence[Sequence[str]], k: int = 10
) -> dict[str, np.ndarray]:
    """:func:`per_query_metrics` of ``encoder`` on (query, document) pairs, in pair order."""
    return per_query_metrics(retrieval_ranks(encoder, pairs), k)


def retrieval_metrics(
    encoder: Any, pairs: Sequence[Sequence[str]], k: int = 10
) -> dict[str, float]:
    """MRR@k (reciprocal rank, 0 past rank k), recall@1 and nDCG@k over (query, document)
    pairs: the means of :func:`retrieval_scores`."""
    return {name: float(v.mean()) for name, v in retrieval_scores(encoder, pairs, k).items()}


def evaluate(encoder: Any, examples: Sequence[Sequence[str]]) -> dict[str, float]:
    """Triplet accuracy for triplets (an n-tuple counts as a triplet per negative); MRR@10,
    recall@1 and nDCG@10 for pairs (anchor, positive)."""
    if not examples:
        return {}
    if len(examples[0]) >= 3:
        triplets = [(row[0], row[1], negative) for row in examples for negative in row[2:]]
        return {"triplet_accuracy": triplet_accuracy(encoder, triplets)}
    return retrieval_metrics(encoder, examples)


class _AtDim:
    """Stands in for an encoder: vectors embedded once, served cut to ``dim`` and renormalized
    (what ``Encoder.encode(truncate_dim=dim)`` gives, without a forward pass per dim)."""

    def __init__(self, vectors: dict[str, np.ndarray], dim: int | None) -> None:
        self.vectors, self.dim = vectors, dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.stack([self.vectors[t][: self.dim] for t in texts]).astype(np.float64)
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def evaluate_at_dims(
    encoder: Any, examples: Sequence[Sequence[str]], dims: Sequence[int]
) -> dict[str, float]:
    """:func:`evaluate` at full width, and at each Matryoshka dim with keys ``<metric>@dim<d>``
    (``mrr@10@dim256``): every text is embedded once, then truncated and renormalized."""
    if not examples:
        return {}
    texts = list(dict.fromkeys(text for example in examples for text in example))
    vectors = dict(zip(texts, np.asarray(encoder.encode(texts), dtype=np.float32), strict=True))
    metrics = evaluate(_AtDim(vectors, None), examples)
    for dim in dims:
        at_dim = evaluate(_AtDim(vectors, dim), examples)
        metrics.update({f"{key}@dim{dim}": value for key, value in at_dim.items()})
    return metrics

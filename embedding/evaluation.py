"""Evaluation: triplet accuracy, and retrieval MRR@10 / recall@1 for (query, document) pairs;
for Matryoshka models also at each truncated width (:func:`evaluate_at_dims`).

Ties count against the model (a strict ``>`` for triplets, a pessimistic rank for
retrieval): a collapsed model that maps every text to the same vector scores 0 accuracy and
the worst rank, never a perfect score.

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


def retrieval_metrics(
    encoder: Any, pairs: Sequence[Sequence[str]], k: int = 10
) -> dict[str, float]:
    """MRR@k (reciprocal rank, 0 past rank k) and recall@1 over (query, document) pairs."""
    ranks = retrieval_ranks(encoder, pairs)
    reciprocal = np.where(ranks <= k, 1.0 / ranks, 0.0)
    return {f"mrr@{k}": float(reciprocal.mean()), "recall@1": float((ranks == 1).mean())}


def evaluate(encoder: Any, examples: Sequence[Sequence[str]]) -> dict[str, float]:
    """Triplet accuracy for triplets; MRR@10 and recall@1 for pairs (anchor, positive)."""
    if not examples:
        return {}
    if len(examples[0]) == 3:
        return {"triplet_accuracy": triplet_accuracy(encoder, examples)}
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

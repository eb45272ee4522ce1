"""Evaluation: triplet accuracy, and retrieval MRR@10 / recall@1 for (query, document) pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def triplet_accuracy(encoder: Any, triplets: Sequence[Sequence[str]]) -> float:
    """Share of triplets where cos(anchor, positive) > cos(anchor, negative)."""
    anchors, positives, negatives = (encoder.encode([t[i] for t in triplets]) for i in range(3))
    pos = (anchors * positives).sum(axis=1)
    neg = (anchors * negatives).sum(axis=1)
    return float((pos > neg).mean())


def retrieval_metrics(
    encoder: Any, pairs: Sequence[Sequence[str]], k: int = 10
) -> dict[str, float]:
    """Each query's gold document ranked among all distinct documents: MRR@k and recall@1."""
    documents = list(dict.fromkeys(p[1] for p in pairs))
    gold = np.array([documents.index(p[1]) for p in pairs])
    queries = encoder.encode([p[0] for p in pairs])
    docs = encoder.encode(documents)
    scores = queries @ docs.T
    gold_scores = scores[np.arange(len(pairs)), gold]
    ranks = (scores > gold_scores[:, None]).sum(axis=1) + 1  # 1 = best
    reciprocal = np.where(ranks <= k, 1.0 / ranks, 0.0)
    return {f"mrr@{k}": float(reciprocal.mean()), "recall@1": float((ranks == 1).mean())}


def evaluate(encoder: Any, examples: Sequence[Sequence[str]]) -> dict[str, float]:
    """Triplet accuracy for triplets; MRR@10 and recall@1 for pairs (anchor, positive)."""
    if not examples:
        return {}
    if len(examples[0]) == 3:
        return {"triplet_accuracy": triplet_accuracy(encoder, examples)}
    return retrieval_metrics(encoder, examples)

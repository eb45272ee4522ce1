"""Evaluation metrics: exact figures on hand-made vectors, then on the real model."""

from __future__ import annotations

import numpy as np
import pytest

from embedding.evaluation.metrics import (
    evaluate,
    per_query_metrics,
    retrieval_metrics,
    retrieval_ranks,
    retrieval_scores,
    triplet_accuracy,
)


class TableEncoder:
    """Looks each text up in a table of vectors (unit-normalized), like ``Encoder.encode``."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = {k: np.asarray(v, dtype=np.float32) for k, v in table.items()}

    def encode(self, texts):
        rows = np.stack([self.table[t] for t in texts])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_triplet_accuracy_counts_strict_wins():
    enc = TableEncoder(
        {"a": [1, 0], "p": [1, 0.1], "n": [0, 1], "p2": [0, 1], "n2": [1, 0.1], "t": [1, 1]}
    )
    assert triplet_accuracy(enc, [("a", "p", "n")]) == 1.0
    assert triplet_accuracy(enc, [("a", "p", "n"), ("a", "p2", "n2")]) == 0.5
    assert triplet_accuracy(enc, [("a", "t", "t")]) == 0.0, "a tie is not a win"


def test_retrieval_ranks_and_mrr_are_exact():
    # Gold scores: q1 -> d1 best (rank 1), q2 -> d2 second (d3 beats it), q3 -> d3 third.
    enc = TableEncoder(
        {
            "q1": [1, 0],
            "q2": [0, 1],
            "q3": [1, -0.1],
            "d1": [1, 0],
            "d2": [0.6, 0.8],
            "d3": [0, 1],
        }
    )
    pairs = [("q1", "d1"), ("q2", "d2"), ("q3", "d3")]
    assert retrieval_ranks(enc, pairs).tolist() == [1, 2, 3]
    # nDCG with one relevant document: 1 / log2(rank + 1), so 1, 1/log2(3), 1/2.
    assert retrieval_metrics(enc, pairs) == {
        "mrr@10": pytest.approx((1 + 1 / 2 + 1 / 3) / 3),
        "recall@1": pytest.approx(1 / 3),
        "ndcg@10": pytest.approx((1 + 1 / np.log2(3) + 1 / 2) / 3),
    }
    per_query = retrieval_scores(enc, pairs)
    assert per_query["mrr@10"].tolist() == pytest.approx([1, 1 / 2, 1 / 3])
    assert per_query["recall@1"].tolist() == [1.0, 0.0, 0.0]
    assert per_query["ndcg@10"].tolist() == pytest.approx([1, 0.6309297535714575, 0.5])
    # Past k a query scores 0: at k=2 the third query adds nothing.
    assert retrieval_metrics(enc, pairs, k=2)["mrr@2"] == pytest.approx((1 + 1 / 2) / 3)
    assert retrieval_metrics(enc, pairs, k=2)["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def test_per_query_metrics_by_hand_past_k():
    scores = per_query_metrics(np.array([1, 3, 7, 10, 11, 200]), k=10)
    assert scores["mrr@10"].tolist() == pytest.approx([1, 1 / 3, 1 / 7, 1 / 10, 0, 0])
    assert scores["recall@1"].tolist() == [1, 0, 0, 0, 0, 0]
    assert scores["ndcg@10"].tolist() == pytest.approx(
        [1, 1 / 2, 1 / 3, 1 / np.log2(11), 0, 0]  # log2(3+1) = 2, log2(7+1) = 3
    )
    with pytest.raises(ValueError, match="k must be"):
        per_query_metrics(np.array([1]), k=0)


def test_a_collapsed_model_gets_the_worst_rank_not_the_best():
    enc = TableEncoder({t: [1.0, 1.0] for t in ("q1", "q2", "q3", "d1", "d2", "d3")})
    metrics = retrieval_metrics(enc, [("q1", "d1"), ("q2", "d2"), ("q3", "d3")])
    assert metrics == {
        "mrr@10": pytest.approx(1 / 3),
        "recall@1": 0.0,
        "ndcg@10": pytest.approx(1 / 2),  # every query at rank 3: 1 / log2(4)
    }
    assert triplet_accuracy(enc, [("q1", "d1", "d2")]) == 0.0


def test_repeated_documents_are_one_candidate():
    enc = TableEncoder({"q1": [1, 0], "q2": [1, 0.1], "d": [1, 0.05], "e": [0, 1]})
    assert retrieval_ranks(enc, [("q1", "d"), ("q2", "d"), ("q1", "e")]).tolist() == [1, 1, 2]


def test_empty_input_is_refused():
    enc = TableEncoder({})
    with pytest.raises(ValueError, match="undefined"):
        retrieval_metrics(enc, [])
    with pytest.raises(ValueError, match="undefined"):
        triplet_accuracy(enc, [])
    assert evaluate(enc, []) == {}


def test_on_the_real_model(minilm_fp32):
    triplets = [("def add(a, b)", "def plus(x, y)", "SELECT * FROM t")]
    assert triplet_accuracy(minilm_fp32, triplets) == 1.0
    pairs = [
        ("add two numbers", "def add(a, b): return a + b"),
        ("open a file", "def read(p): return open(p).read()"),
    ]
    metrics = retrieval_metrics(minilm_fp32, pairs)
    assert metrics == {"mrr@10": 1.0, "recall@1": 1.0, "ndcg@10": 1.0}
    swapped = [(q, d) for (q, _), (_, d) in zip(pairs, reversed(pairs), strict=True)]
    assert retrieval_metrics(minilm_fp32, swapped) == {
        "mrr@10": 0.5,
        "recall@1": 0.0,
        "ndcg@10": pytest.approx(1 / np.log2(3)),
    }
    assert set(evaluate(minilm_fp32, pairs)) == {"mrr@10", "recall@1", "ndcg@10"}
    assert set(evaluate(minilm_fp32, triplets)) == {"triplet_accuracy"}

"""A/B comparison of two encoders on (query, document) pairs, with a paired bootstrap.

Every difference here is **B - A** (positive: B scores higher). For each metric (MRR@10,
recall@1, nDCG@10) it gives both models' means, the difference of the means, and a 95 %
confidence interval for that difference from a *paired* bootstrap: each resample draws
queries with replacement, and the same draw serves both models (we resample each query's
score difference), so the interval reflects how much the *gap* varies across queries, not
how much each model's score does. Two models that agree query by query have a narrow
interval even where both scores vary a lot; an unpaired bootstrap would miss that.

The verdict is read from the **primary metric, MRR@10**: "B better" when the whole interval
is above 0, "A better" when it is below, "no significant difference" when it contains 0.
The other metrics are reported beside it, with their own intervals, but do not vote: one
metric decided in advance is one test, three would be three chances of a false verdict.

The interval is the percentile interval of the resampled mean differences (seeded, so a
comparison is reproducible); resamples are drawn in blocks so memory stays bounded for
large data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedding.data.examples import DataError, validate_examples
from embedding.evaluation.metrics import retrieval_scores

K = 10
PRIMARY_METRIC = f"mrr@{K}"
METRICS = (PRIMARY_METRIC, "recall@1", f"ndcg@{K}")
CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000
# The bounds every interface applies (CLI, task payload, API): fewer than 100 resamples
# make a 95 % percentile interval from a handful of points; past 100,000 the interval
# no longer moves, only the time does.
MIN_RESAMPLES = 100
MAX_RESAMPLES = 100_000
MAX_SEED = 2**31 - 1  # stored in an INTEGER column

A_BETTER = "A better"
B_BETTER = "B better"
NO_DIFFERENCE = "no significant difference"
VERDICTS = (A_BETTER, B_BETTER, NO_DIFFERENCE)

# Resampled elements (draws x queries) per block: about 8 MB of indices, and per metric.
_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class Interval:
    """The difference B - A of one metric's means, and its confidence interval."""

    b_minus_a: float
    ci_low: float
    ci_high: float

    def verdict(self) -> str:
        if self.ci_low > 0:
            return B_BETTER
        if self.ci_high < 0:
            return A_BETTER
        return NO_DIFFERENCE

    def to_dict(self) -> dict[str, float]:
        return {"b_minus_a": self.b_minus_a, "ci_low": self.ci_low, "ci_high": self.ci_high}


def paired_bootstrap(
    scores_a: Mapping[str, Any],
    scores_b: Mapping[str, Any],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, Interval]:
    """B - A for each metric, with a percentile interval from a paired bootstrap.

    ``scores_a`` / ``scores_b``: metric name -> per-query scores, the same queries in the
    same order on both sides. Every metric is resampled with the same draws of queries.
    """
    if set(scores_a) != set(scores_b) or not scores_a:
        raise ValueError(
            f"both sides need the same metrics, got {sorted(scores_a)} and {sorted(scores_b)}"
        )
    if (
        isinstance(n_resamples, bool)
        or not isinstance(n_resamples, int | np.integer)
        or n_resamples < 1
    ):
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    names = list(scores_a)
    a = np.stack([np.asarray(scores_a[n], dtype=np.float64) for n in names])
    b = np.stack([np.asarray(scores_b[n], dtype=np.float64) for n in names])
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(
            f"per-query scores must be non-empty and of one length, got {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-query scores must be finite")
    diffs = b - a  # (metrics, queries)
    means = _resampled_means(diffs, n_resamples, np.random.default_rng(seed))
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail], axis=1)
    point = b.mean(axis=1) - a.mean(axis=1)
    return {
        name: Interval(float(point[i]), float(low[i]), float(high[i]))
        for i, name in enumerate(names)
    }


def _resampled_means(diffs: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(metrics, n_resamples): the mean of each resample of queries, for every metric."""
    n = diffs.shape[1]
    block = max(1, _BLOCK_ELEMENTS // n)
    out = np.empty((diffs.shape[0], n_resamples))
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        draws = rng.integers(0, n, size=(stop - start, n))
        out[:, start:stop] = diffs[:, draws].mean(axis=2)
    return out


@dataclass(frozen=True)
class Comparison:
    """Both models' means, the differences B - A with their intervals, and the verdict."""

    metrics_a: dict[str, float]
    metrics_b: dict[str, float]
    differences: dict[str, Interval]
    verdict: str
    n_queries: int
    n_resamples: int
    seed: int
    confidence: float = CONFIDENCE
    primary_metric: str = PRIMARY_METRIC
    metrics: tuple[str, ...] = METRICS

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics_a": dict(self.metrics_a),
            "metrics_b": dict(self.metrics_b),
            "differences": {k: v.to_dict() for k, v in self.differences.items()},
            "verdict": self.verdict,
            "primary_metric": self.primary_metric,
            "n_queries": self.n_queries,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "confidence": self.confidence,
        }


def compare_scores(
    scores_a: Mapping[str, Any],
    scores_b: Mapping[str, Any],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    primary_metric: str = PRIMARY_METRIC,
) -> Comparison:
    """A comparison from per-query scores (metric -> vector); the verdict is the primary
    metric's."""
    if primary_metric not in scores_a:
        raise ValueError(f"primary metric {primary_metric!r} is not among {sorted(scores_a)}")
    differences = paired_bootstrap(scores_a, scores_b, n_resamples, seed, confidence)
    return Comparison(
        metrics_a={k: float(np.mean(v)) for k, v in scores_a.items()},
        metrics_b={k: float(np.mean(v)) for k, v in scores_b.items()},
        differences=differences,
        verdict=differences[primary_metric].verdict(),
        n_queries=len(next(iter(scores_a.values()))),
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        primary_metric=primary_metric,
        metrics=tuple(scores_a),
    )


def check_pairs(rows: Sequence[Sequence[object]], where: str = "row") -> list[tuple[str, str]]:
    """Validated (query, document) pairs; triplets are refused, not silently cut to pairs."""
    checked = validate_examples(rows, where=where)
    if len(checked[0]) != 2:
        raise DataError(
            "a comparison needs (query, document) pairs, got triplets: give "
            '{"anchor", "positive"} rows (or "query"/"document")'
        )
    return [(q, d) for q, d in checked]


def compare_encoders(
    encoder_a: Any,
    encoder_b: Any,
    pairs: Sequence[Sequence[str]],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Compare two encoders (anything with ``encode(texts)`` -> unit vectors) on the same
    (query, document) pairs: each query ranks every distinct document of the data."""
    rows = check_pairs(pairs)
    return compare_scores(
        retrieval_scores(encoder_a, rows, K),
        retrieval_scores(encoder_b, rows, K),
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
    )

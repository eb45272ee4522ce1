"""embedding.evaluation.compare: the paired bootstrap on cases whose answer is known, the verdict, and
the metrics of two encoders on a retrieval case worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from embedding.data.examples import DataError
from embedding.evaluation.compare import (
    A_BETTER,
    B_BETTER,
    METRICS,
    NO_DIFFERENCE,
    PRIMARY_METRIC,
    VERDICTS,
    compare_encoders,
    compare_scores,
    paired_bootstrap,
)
from tests.test_evaluation import TableEncoder

Z95 = 1.959963984540054  # the normal 97.5 % quantile


def _scores(values) -> dict[str, np.ndarray]:
    return {"m": np.asarray(values, dtype=np.float64)}


def test_a_constant_gain_on_every_query_collapses_the_interval_to_that_constant():
    # A's scores vary a lot from query to query; B is A plus 0.125 on every one. The paired
    # bootstrap resamples the per-query gap, which is the same everywhere: no uncertainty.
    a = np.random.default_rng(7).random(300)
    interval = paired_bootstrap(_scores(a), _scores(a + 0.125), n_resamples=500, seed=3)["m"]
    assert interval.b_minus_a == pytest.approx(0.125, abs=1e-12)
    assert interval.ci_low == pytest.approx(0.125, abs=1e-12)
    assert interval.ci_high == pytest.approx(0.125, abs=1e-12)
    assert interval.verdict() == B_BETTER
    worse = paired_bootstrap(_scores(a), _scores(a - 0.125), n_resamples=500, seed=3)["m"]
    assert (worse.ci_low, worse.ci_high) == pytest.approx((-0.125, -0.125), abs=1e-12)
    assert worse.verdict() == A_BETTER


def test_identical_models_give_exactly_zero_and_no_significant_difference():
    a = np.random.default_rng(1).random(50)
    comparison = compare_scores(
        {name: a for name in METRICS}, {name: a.copy() for name in METRICS}, n_resamples=1000
    )
    for interval in comparison.differences.values():
        assert (interval.b_minus_a, interval.ci_low, interval.ci_high) == (0.0, 0.0, 0.0)
    assert comparison.verdict == NO_DIFFERENCE


def test_the_interval_width_matches_the_normal_approximation_for_large_n():
    # Per-query gaps drawn from N(0.05, 0.2^2): the mean gap is approximately normal with
    # standard error s / sqrt(n) (s the sample's standard deviation), so the 95 % interval
    # is about 2 * 1.96 * s / sqrt(n) wide and centred on the sample mean; the sample mean
    # lies within 3 standard errors of the true 0.05.
    n = 4000
    rng = np.random.default_rng(2024)
    a = rng.random(n)
    gap = rng.normal(0.05, 0.2, n)
    interval = paired_bootstrap(_scores(a), _scores(a + gap), n_resamples=4000, seed=11)["m"]
    se = gap.std() / np.sqrt(n)
    assert interval.b_minus_a == pytest.approx(gap.mean(), abs=1e-12)
    assert abs(interval.b_minus_a - 0.05) < 3 * 0.2 / np.sqrt(n)
    width = interval.ci_high - interval.ci_low
    assert width == pytest.approx(2 * Z95 * se, rel=0.05)
    centre = (interval.ci_high + interval.ci_low) / 2
    assert centre == pytest.approx(gap.mean(), abs=0.1 * se)
    assert interval.verdict() == B_BETTER  # 0.05 is ~16 standard errors away from 0


def test_a_gap_that_averages_zero_is_no_significant_difference():
    # Half the queries gain 0.5, half lose 0.5: the mean gap is 0, the interval straddles it.
    a = np.full(200, 0.5)
    b = np.where(np.arange(200) % 2 == 0, 1.0, 0.0)
    interval = paired_bootstrap(_scores(a), _scores(b), n_resamples=1000, seed=0)["m"]
    assert interval.b_minus_a == 0.0
    assert interval.ci_low < 0 < interval.ci_high
    assert interval.verdict() == NO_DIFFERENCE


def test_every_metric_is_resampled_with_the_same_draws_of_queries():
    # If metric y's gap is exactly twice metric x's on every query, the same draws give
    # exactly twice the resampled means, so twice the interval.
    rng = np.random.default_rng(5)
    a = {"x": rng.random(100), "y": rng.random(100)}
    gap = rng.normal(0.0, 0.3, 100)
    b = {"x": a["x"] + gap, "y": a["y"] + 2 * gap}
    out = paired_bootstrap(a, b, n_resamples=800, seed=9)
    assert out["y"].ci_low == pytest.approx(2 * out["x"].ci_low, abs=1e-12)
    assert out["y"].ci_high == pytest.approx(2 * out["x"].ci_high, abs=1e-12)


def test_swapping_a_and_b_negates_the_difference_and_its_interval():
    rng = np.random.default_rng(3)
    a, b = _scores(rng.random(120)), _scores(rng.random(120) + 0.1)
    forward = paired_bootstrap(a, b, n_resamples=1000, seed=4)["m"]
    backward = paired_bootstrap(b, a, n_resamples=1000, seed=4)["m"]
    assert backward.b_minus_a == pytest.approx(-forward.b_minus_a)
    assert (backward.ci_low, backward.ci_high) == pytest.approx((-forward.ci_high, -forward.ci_low))
    assert {forward.verdict(), backward.verdict()} == {A_BETTER, B_BETTER}


def test_the_seed_makes_it_reproducible_and_another_seed_differs():
    rng = np.random.default_rng(8)
    a, b = _scores(rng.random(60)), _scores(rng.random(60))
    first = paired_bootstrap(a, b, n_resamples=300, seed=1)
    assert paired_bootstrap(a, b, n_resamples=300, seed=1) == first
    assert paired_bootstrap(a, b, n_resamples=300, seed=2) != first


def test_bad_inputs_are_refused_with_a_reason():
    a = _scores([0.1, 0.2])
    with pytest.raises(ValueError, match="same metrics"):
        paired_bootstrap(a, {"other": np.array([0.1, 0.2])})
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap(a, _scores([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap(a, a, n_resamples=0)
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(a, _scores([0.1, float("nan")]))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(a, a, confidence=1.0)
    with pytest.raises(ValueError, match="primary metric"):
        compare_scores(a, a)  # no mrr@10 to decide on


def test_the_verdict_is_decided_by_mrr_at_10_alone():
    # B wins recall@1 on every query but ties MRR@10 exactly: no significant difference.
    n = 40
    a = {"mrr@10": np.full(n, 0.5), "recall@1": np.zeros(n), "ndcg@10": np.full(n, 0.6)}
    b = {"mrr@10": np.full(n, 0.5), "recall@1": np.ones(n), "ndcg@10": np.full(n, 0.6)}
    comparison = compare_scores(a, b, n_resamples=200)
    assert PRIMARY_METRIC == "mrr@10"
    assert comparison.differences["recall@1"].verdict() == B_BETTER
    assert comparison.verdict == NO_DIFFERENCE


def test_two_encoders_on_a_retrieval_case_worked_out_by_hand():
    # Documents d1..d3 along three directions. A ranks every gold document first. B sees
    # q2 closest to d3 (gold d2 second) and q3 closest to d1 with d2 next (gold d3 third).
    docs = {"d1": [1, 0, 0], "d2": [0, 1, 0], "d3": [0, 0, 1]}
    a = TableEncoder({**docs, "q1": [1, 0, 0], "q2": [0, 1, 0], "q3": [0, 0, 1]})
    b = TableEncoder({**docs, "q1": [1, 0, 0], "q2": [0, 0.6, 0.8], "q3": [0.8, 0.5, 0.3]})
    pairs = [("q1", "d1"), ("q2", "d2"), ("q3", "d3")]
    comparison = compare_encoders(a, b, pairs, n_resamples=500, seed=0)
    assert comparison.metrics_a == {"mrr@10": 1.0, "recall@1": 1.0, "ndcg@10": 1.0}
    # B's ranks are 1, 2, 3: reciprocal ranks 1, 1/2, 1/3; nDCG 1/log2(rank + 1).
    assert comparison.metrics_b == pytest.approx(
        {
            "mrr@10": (1 + 1 / 2 + 1 / 3) / 3,
            "recall@1": 1 / 3,
            "ndcg@10": (1 + 1 / np.log2(3) + 1 / np.log2(4)) / 3,
        }
    )
    assert comparison.differences["mrr@10"].b_minus_a == pytest.approx((1 / 2 + 2 / 3) / -3)
    # Three queries with gaps 0, -1/2, -2/3: every resample's mean lies in [-2/3, 0].
    mrr = comparison.differences["mrr@10"]
    assert -2 / 3 - 1e-12 <= mrr.ci_low <= mrr.ci_high <= 1e-12
    assert comparison.n_queries == 3 and comparison.n_resamples == 500
    assert set(comparison.to_dict()["differences"]["ndcg@10"]) == {"b_minus_a", "ci_low", "ci_high"}


def test_triplets_are_refused_not_cut_to_pairs():
    enc = TableEncoder({"a": [1, 0], "p": [1, 0], "n": [0, 1]})
    with pytest.raises(DataError, match="pairs"):
        compare_encoders(enc, enc, [("a", "p", "n")])
    with pytest.raises(DataError, match="empty"):
        compare_encoders(enc, enc, [])


def test_the_database_knows_the_same_verdicts():
    from db.models import EVALUATION_VERDICTS

    assert EVALUATION_VERDICTS == VERDICTS

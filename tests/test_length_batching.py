"""The forward-pass plan: every text once, the row cap and token budget kept, and the
cheapest contiguous cut of the length-sorted texts under the cost model (checked against
every possible cut on small cases)."""

from __future__ import annotations

import itertools
import random

import pytest

from embedding.inference.length_batching import length_batches, pass_cost


def _check(lengths: list[int], batch_size: int, budget: int) -> list[list[int]]:
    passes = list(length_batches(lengths, batch_size, budget))
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    for p in passes:
        assert len(p) <= batch_size
        assert len(p) == 1 or max(lengths[i] for i in p) * len(p) <= budget
    return passes


def _plan_cost(lengths: list[int], passes: list[list[int]]) -> float:
    return sum(pass_cost(len(p), max(lengths[i] for i in p)) for p in passes)


def test_every_text_once_within_the_row_cap_and_the_budget():
    lengths = [5, 300, 20, 20, 7, 256, 1, 900]
    _check(lengths, batch_size=3, budget=600)
    assert _check([], batch_size=3, budget=600) == []


def test_short_texts_do_not_ride_in_a_long_pass():
    """The case that motivated it: four 256-token snippets and twelve short ones."""
    lengths = [256] * 4 + [12] * 12
    passes = _check(lengths, batch_size=256, budget=4096)
    assert sorted(len(p) for p in passes) == [4, 12]
    assert _plan_cost(lengths, passes) < pass_cost(16, 256) / 2


def test_texts_of_one_length_share_as_few_passes_as_the_budget_allows():
    passes = _check([64] * 200, batch_size=256, budget=4096)
    assert len(passes) == 4  # 200 texts, at most 4096 / 64 = 64 a pass


def test_longest_first():
    lengths = [3, 200, 40, 200, 3, 40]
    passes = _check(lengths, batch_size=2, budget=4096)
    widths = [max(lengths[i] for i in p) for p in passes]
    assert widths == sorted(widths, reverse=True)


@pytest.mark.parametrize("seed", range(40))
def test_the_plan_is_the_cheapest_contiguous_cut(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 9)
    lengths = [rng.choice([2, 3, 8, 15, 40, 90, 200, 256, 512]) for _ in range(n)]
    batch_size, budget = rng.choice([2, 4, 64]), rng.choice([256, 1024, 4096])
    plan = _check(lengths, batch_size, budget)
    order = sorted(range(n), key=lambda i: -lengths[i])
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=n - 1):
        passes, current = [], [order[0]]
        for i, cut in zip(order[1:], cuts, strict=True):
            if cut:
                passes.append(current)
                current = []
            current.append(i)
        passes.append(current)
        ok = all(
            len(p) <= batch_size and (len(p) == 1 or len(p) * lengths[p[0]] <= budget)
            for p in passes
        )
        if ok:
            best = min(best, _plan_cost(lengths, passes))
    assert _plan_cost(lengths, plan) == pytest.approx(best)


@pytest.mark.parametrize("seed", range(10))
def test_spread_passes_splits_until_every_worker_has_a_pass_costliest_first(seed):
    from embedding.inference.length_batching import spread_passes

    rng = random.Random(seed)
    lengths = [rng.choice([3, 12, 40, 128, 256]) for _ in range(rng.randint(1, 30))]
    planned = _check(lengths, batch_size=16, budget=4096)
    workers = rng.randint(1, 4)
    spread = spread_passes(planned, lengths, workers)
    assert sorted(i for p in spread for i in p) == list(range(len(lengths)))
    # only splits: every new pass lies inside one planned pass, so the cap and budget hold
    assert all(any(set(p) <= set(q) for q in planned) for p in spread)
    assert len(spread) >= min(workers, len(lengths))
    costs = [pass_cost(len(p), max(lengths[i] for i in p)) for p in spread]
    assert costs == sorted(costs, reverse=True)
    if len(planned) >= workers:
        assert sorted(map(sorted, spread)) == sorted(map(sorted, planned))  # nothing to split

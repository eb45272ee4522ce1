"""Which texts share a forward pass: length-sorted groups that cost the least compute.

Every row of a forward pass is padded to its longest text, and each pass has a fixed cost
(kernel launches, Python, pooling). Measured on minilm (`HF_HUB_OFFLINE=1` Xeon with AMX,
2 cores, bf16, rows x width from 1 x 8 to 64 x 256), a pass costs about

    7.2 ms + 0.037 ms x padded tokens + 0.000044 ms x rows x width^2   (attention)

i.e. the fixed cost is worth ``OVERHEAD_TOKENS`` padded tokens and attention adds
``width / ATTENTION_WIDTH`` to each token's cost.

Greedy packing (fill a pass while rows x width stays under the token budget) ignored the
padding: a serving batch of 16 code snippets (four of 256 tokens, eight under 20) ran as
one 16 x 256 pass, 196 ms, where a pass for the long ones and one for the short ones take
101 ms. Sorted by length, the cheapest cut into contiguous groups is a small dynamic
program over that cost: O(texts x batch_size) steps, vectorized, about a millisecond for a
few hundred texts, which is nothing next to the forward passes it plans.

The constants are minilm's on a CPU; a GPU's are in :mod:`embedding.inference.device_profile`. A
larger model's per-token cost is larger, so its fixed cost is worth fewer tokens and its
best cut a little finer; the plan is still never worse than padding everything to the
longest text, and the budget and row cap always hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

OVERHEAD_TOKENS = 195.0  # a pass's fixed cost, in padded tokens' worth (7.2 ms / 0.037 ms)
ATTENTION_WIDTH = 830.0  # width at which attention doubles a token's cost (0.037 / 0.000044)


def pass_cost(rows: int, width: int) -> float:
    """The modelled cost of one forward pass of ``rows`` texts padded to ``width``."""
    return OVERHEAD_TOKENS + rows * width * (1.0 + width / ATTENTION_WIDTH)


def length_batches(
    lengths: Sequence[int],
    batch_size: int,
    token_budget: int,
    overhead_tokens: float = OVERHEAD_TOKENS,
    attention_width: float = ATTENTION_WIDTH,
) -> Iterable[list[int]]:
    """Indices grouped into forward passes of similar length, cheapest plan first found.

    Each pass holds at most ``batch_size`` texts and at most ``token_budget`` padded tokens
    (a text longer than the budget gets a pass of its own). Longest first, so the biggest
    allocation happens once at the start; within a pass, longest first as well. The cost
    model's two figures default to the CPU's; a device's come from
    :mod:`embedding.inference.device_profile`.
    """
    n = len(lengths)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: -lengths[i])
    width = np.array([lengths[i] for i in order], dtype=np.float64)
    per_token = 1.0 + width / attention_width
    best = np.zeros(n + 1)  # best[j]: cheapest plan for the j longest texts
    cut = np.zeros(n + 1, dtype=np.int64)  # where that plan's last pass starts
    for end in range(1, n + 1):
        starts = np.arange(max(0, end - batch_size), end)
        rows = end - starts
        padded = rows * width[starts]
        costs = best[starts] + overhead_tokens + padded * per_token[starts]
        costs[(padded > token_budget) & (rows > 1)] = np.inf
        pick = int(np.argmin(costs))
        best[end], cut[end] = costs[pick], starts[pick]
    passes: list[list[int]] = []
    end = n
    while end > 0:
        start = int(cut[end])
        passes.append(order[start:end])
        end = start
    return passes[::-1]


def spread_passes(
    passes: Sequence[list[int]], lengths: Sequence[int], workers: int
) -> list[list[int]]:
    """The plan for ``workers`` passes at once (a :class:`~embedding.inference.pass_pool.PassPool`).

    The costliest pass of two rows or more is halved (by rows, longest half first) until
    there are at least ``workers`` passes or every pass is one row, so that a small batch
    keeps every worker busy; then the passes are ordered costliest first, so that workers
    taking them in turn finish close together (the longest-processing-time rule).
    """

    def cost(rows: list[int]) -> float:
        return pass_cost(len(rows), max(lengths[i] for i in rows))

    plan = [list(p) for p in passes]
    while len(plan) < workers:
        splittable = [i for i, rows in enumerate(plan) if len(rows) > 1]
        if not splittable:
            break
        costliest = max(splittable, key=lambda i: cost(plan[i]))
        rows = plan[costliest]
        half = len(rows) // 2
        plan[costliest : costliest + 1] = [rows[:half], rows[half:]]
    return sorted(plan, key=cost, reverse=True)


__all__ = ["ATTENTION_WIDTH", "OVERHEAD_TOKENS", "length_batches", "pass_cost", "spread_passes"]

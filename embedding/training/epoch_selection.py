"""Which epoch to keep, and when to stop trying: read off the run's per-epoch evaluations.

The selection is derived from the history (each finished epoch's ``eval`` on the validation
set), never kept beside it. The history is in every checkpoint, so a resumed run knows its
best epoch and how many epochs it has gone without a gain exactly as the uninterrupted run
would, and nothing can drift out of step with it.

The metric is the one the validation rows give: MRR@10 for (query, document) pairs,
triplet accuracy for triplets (see :func:`embedding.evaluation.metrics.evaluate`). Higher is
better. A tie is no gain: the earlier epoch stays best (fewer steps from the base, the same
score), and a plateau counts towards the patience.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# In order of preference: the first one an epoch's eval has is the one that selects.
METRICS = ("mrr@10", "triplet_accuracy")


def metric_of(figures: Mapping[str, Any]) -> str | None:
    """The selecting metric among an evaluation's figures (None: nothing to select by)."""
    return next((m for m in METRICS if m in figures), None)


@dataclass(frozen=True)
class Selection:
    """The best epoch so far and how long ago it was."""

    metric: str | None  # None: the epochs were not evaluated (no validation set)
    best_epoch: int | None
    best_value: float | None
    last_epoch: int  # the latest finished epoch (0 before the first)

    @property
    def epochs_without_gain(self) -> int:
        return 0 if self.best_epoch is None else self.last_epoch - self.best_epoch

    def patience_exhausted(self, patience: int) -> bool:
        """True when ``patience`` (> 0) epochs in a row brought no gain: stop training."""
        return patience > 0 and self.best_epoch is not None and self.epochs_without_gain >= patience


def select(history: Sequence[Mapping[str, Any]]) -> Selection:
    """The selection after the finished epochs of ``history`` (``EpochStats`` as dicts).

    An epoch whose metric is missing or not finite never becomes the best.
    """
    metric: str | None = None
    best_epoch: int | None = None
    best_value: float | None = None
    last = 0
    for entry in history:
        last = int(entry["epoch"])
        figures = entry.get("eval") or {}
        metric = metric or metric_of(figures)
        value = figures.get(metric) if metric else None
        if value is None or not math.isfinite(value):
            continue
        if best_value is None or value > best_value:
            best_epoch, best_value = last, float(value)
    return Selection(metric, best_epoch, best_value, last)


__all__ = ["METRICS", "Selection", "metric_of", "select"]

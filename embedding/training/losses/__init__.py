"""Training losses on embeddings, one per module (as sentence-transformers lays them out).

- :mod:`~embedding.training.losses.triplet`: triplet loss with cosine distance;
- :mod:`~embedding.training.losses.mnrl`: multiple negatives ranking loss (in-batch negatives);
- :mod:`~embedding.training.losses.cached_mnrl`: GradCache, MNRL over big batches at small-batch memory;
- :mod:`~embedding.training.losses.matryoshka`: a loss summed over truncated, renormalized widths.

Each equals sentence-transformers' loss of the same name and settings on the same batch
(``tests/test_losses.py``, ``tests/test_cached_mnrl.py``), so results compare with the peer.
"""

from __future__ import annotations

from embedding.training.losses.cached_mnrl import cached_mnrl_backward, gradcache_backward
from embedding.training.losses.matryoshka import MatryoshkaLoss, training_dims, truncate
from embedding.training.losses.mnrl import (
    DEFAULT_MNRL_SCALE,
    false_negative_mask,
    multiple_negatives_ranking_loss,
)
from embedding.training.losses.triplet import DEFAULT_TRIPLET_MARGIN, cosine_distance, triplet_loss

__all__ = [
    "DEFAULT_MNRL_SCALE",
    "DEFAULT_TRIPLET_MARGIN",
    "MatryoshkaLoss",
    "cached_mnrl_backward",
    "cosine_distance",
    "false_negative_mask",
    "gradcache_backward",
    "multiple_negatives_ranking_loss",
    "training_dims",
    "triplet_loss",
    "truncate",
]

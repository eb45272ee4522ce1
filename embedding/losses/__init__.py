"""Training losses on embeddings, one per module (as sentence-transformers lays them out).

- :mod:`~embedding.losses.triplet`: triplet loss with cosine distance;
- :mod:`~embedding.losses.mnrl`: multiple negatives ranking loss (in-batch negatives).

Each equals sentence-transformers' loss of the same name and settings on the same batch
(``tests/test_losses.py``), so results compare with the peer.
"""

from __future__ import annotations

from embedding.losses.mnrl import DEFAULT_MNRL_SCALE, multiple_negatives_ranking_loss
from embedding.losses.triplet import DEFAULT_TRIPLET_MARGIN, cosine_distance, triplet_loss

__all__ = [
    "DEFAULT_MNRL_SCALE",
    "DEFAULT_TRIPLET_MARGIN",
    "cosine_distance",
    "multiple_negatives_ranking_loss",
    "triplet_loss",
]

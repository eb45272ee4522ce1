"""Multiple negatives ranking loss (sentence-transformers' ``MultipleNegativesRankingLoss``).

Equal to the peer's on the same batch (``tests/test_losses.py`` checks it to 1e-5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_MNRL_SCALE = 20.0


def multiple_negatives_ranking_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    scale: float = DEFAULT_MNRL_SCALE,
) -> torch.Tensor:
    """In-batch negatives: anchor i must pick positive i among all positives (and negatives).

    Cross-entropy over ``scale * cos(anchor_i, candidate_j)``; an optional hard negative per
    anchor joins the candidates (ST ``MultipleNegativesRankingLoss``).
    """
    candidates = positive if negative is None else torch.cat([positive, negative], dim=0)
    scores = scale * F.normalize(anchor, dim=-1) @ F.normalize(candidates, dim=-1).T
    labels = torch.arange(anchor.shape[0], device=anchor.device)
    return F.cross_entropy(scores, labels)

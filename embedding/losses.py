"""Training losses on L2-normalized embeddings.

Both equal sentence-transformers' losses of the same name and settings on the same batch
(``tests/test_losses.py`` checks it to 1e-5), so results are comparable with the peer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from embedding.hyperparameters import MARGIN

DEFAULT_TRIPLET_MARGIN = MARGIN.default  # why 0.5 and not 5: embedding/hyperparameters.py
DEFAULT_MNRL_SCALE = 20.0


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(a, b, dim=-1)


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = DEFAULT_TRIPLET_MARGIN,
) -> torch.Tensor:
    """mean(relu(d(a, p) - d(a, n) + margin)) with cosine distance (ST ``TripletLoss`` COSINE)."""
    return F.relu(
        cosine_distance(anchor, positive) - cosine_distance(anchor, negative) + margin
    ).mean()


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

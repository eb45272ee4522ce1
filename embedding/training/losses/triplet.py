"""Triplet loss with cosine distance (sentence-transformers' ``TripletLoss``, COSINE metric).

Equal to the peer's on the same batch (``tests/test_losses.py`` checks it to 1e-5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from embedding.training.hyperparameters import MARGIN

DEFAULT_TRIPLET_MARGIN = MARGIN.default  # why 0.5 and not 5: embedding/training/hyperparameters.py


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

"""Multiple negatives ranking loss (sentence-transformers' ``MultipleNegativesRankingLoss``).

Equal to the peer's on the same batch (``tests/test_losses.py`` checks it to 1e-5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_MNRL_SCALE = 20.0


def multiple_negatives_ranking_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    *negatives: torch.Tensor,
    scale: float = DEFAULT_MNRL_SCALE,
    exclude: torch.Tensor | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """In-batch negatives: anchor i must pick positive i among all positives (and negatives).

    Cross-entropy over ``scale * cos(anchor_i, candidate_j)``; any number of hard-negative
    columns (one per anchor each, ST's n-tuples) join the candidates, every row's negatives
    for every anchor (ST ``MultipleNegativesRankingLoss``). ``exclude`` (bool, anchors x
    candidates, see :func:`false_negative_mask`) drops candidates that are not negatives at
    all: the anchor's own positive text seen again elsewhere in the batch.

    ``symmetric`` (ST ``MultipleNegativesSymmetricRankingLoss``): the mean of that loss and
    its mirror, positive i picking anchor i among all anchors (the same scores, transposed;
    negatives take no part in the mirror). Search runs both ways in code: a query finds
    code, and the code a user points at should find its description.
    """
    candidates = torch.cat([positive, *negatives], dim=0)
    scores = scale * F.normalize(anchor, dim=-1) @ F.normalize(candidates, dim=-1).T
    if exclude is not None:
        scores = scores.masked_fill(exclude.to(scores.device), float("-inf"))
    labels = torch.arange(anchor.shape[0], device=anchor.device)
    forward = F.cross_entropy(scores, labels)
    if not symmetric:
        return forward
    backward = F.cross_entropy(scores[:, : anchor.shape[0]].T, labels)
    return (forward + backward) / 2


def false_negative_mask(columns: Sequence[Sequence[str]]) -> torch.Tensor | None:
    """Which in-batch candidates repeat the anchor's own positive text (None: none do).

    ``columns``: the batch's anchors, positives[, negatives...]. Candidate j (the positives,
    then each negative column in turn) is excluded for anchor i when its text equals
    positive i and it is not positive i itself. Without this, a pair seen twice in a batch,
    or a mined hard negative that is another row's positive, teaches the model to push a
    text away from itself: the loss of such an anchor cannot go below log 2. sentence-transformers avoids the case with
    its ``NoDuplicatesBatchSampler``; masking keeps our batches (and exact resume) as they are.
    With no repeats the loss is exactly the plain one.
    """
    positives = list(columns[1])
    candidates = positives + [text for column in columns[2:] for text in column]
    where: dict[str, list[int]] = {}
    for j, text in enumerate(candidates):
        where.setdefault(text, []).append(j)
    hits = [(i, j) for i, text in enumerate(positives) for j in where[text] if j != i]
    if not hits:
        return None
    mask = torch.zeros(len(positives), len(candidates), dtype=torch.bool)
    rows, cols = zip(*hits, strict=True)
    mask[list(rows), list(cols)] = True
    return mask

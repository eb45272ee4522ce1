"""Our losses equal sentence-transformers' losses of the same name and settings (1e-5)."""

from __future__ import annotations

import pytest
import torch

from embedding.inference.encoder import Encoder
from embedding.training.losses import multiple_negatives_ranking_loss, triplet_loss
from tests.tiny_models import MINILM_DIR

BATCH = [
    ("def process_data", "def handle_data", "SELECT FROM table", "import os"),
    ("async fn fetch", "async fn load", "const config", "fn main()"),
    ("class Worker", "class Handler", "def helper", "print(x)"),
    ("if condition then", "if test do", "console.log", "while true"),
]


@pytest.fixture(scope="module")
def peer():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(MINILM_DIR), device="cpu")
    model.eval()
    return model


@pytest.fixture(scope="module")
def ours():
    encoder = Encoder.load("minilm", device="cpu", precision="fp32")
    encoder.model.eval()
    return encoder


def _st_features(model, texts):
    return model.tokenize(texts)


def _ours(encoder, texts):
    with torch.no_grad():
        return encoder.embed(encoder.tokenize(texts))


@pytest.mark.parametrize("margin", [0.5, 1.0])
def test_triplet_loss_equals_sentence_transformers(peer, ours, margin):
    from sentence_transformers.losses import TripletDistanceMetric, TripletLoss

    columns = [[row[i] for row in BATCH] for i in range(3)]
    st_loss = TripletLoss(peer, distance_metric=TripletDistanceMetric.COSINE, triplet_margin=margin)
    with torch.no_grad():
        theirs = st_loss([_st_features(peer, c) for c in columns], None).item()
    a, p, n = (_ours(ours, c) for c in columns)
    mine = triplet_loss(a, p, n, margin=margin).item()
    assert theirs > 0
    assert abs(mine - theirs) < 1e-5, (mine, theirs)


@pytest.mark.parametrize("width", [2, 3, 4], ids=["pairs", "triplets", "2-negative n-tuples"])
def test_mnrl_equals_sentence_transformers(peer, ours, width):
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    columns = [[row[i] for row in BATCH] for i in range(width)]
    st_loss = MultipleNegativesRankingLoss(peer, scale=20.0)
    with torch.no_grad():
        theirs = st_loss([_st_features(peer, c) for c in columns], None).item()
    mine = multiple_negatives_ranking_loss(*(_ours(ours, c) for c in columns), scale=20.0).item()
    assert abs(mine - theirs) < 1e-5, (mine, theirs)


def test_triplet_loss_is_zero_only_past_the_margin():
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    n = torch.tensor([[0.0, 1.0]])  # distance 1 further than the positive
    assert triplet_loss(a, p, n, margin=0.5).item() == 0.0
    assert abs(triplet_loss(a, p, n, margin=1.5).item() - 0.5) < 1e-6


def test_a_repeated_positive_is_not_its_own_negative():
    """Row 2 repeats row 0's positive, and row 1's hard negative is that same text: for
    anchor 0 those two candidates are masked, so its loss is the loss over the batch without
    them; anchors whose positive is not repeated keep every candidate."""
    from embedding.training.losses import false_negative_mask

    torch.manual_seed(0)
    positives, negatives = torch.randn(3, 8), torch.randn(3, 8)
    positives[2] = positives[0]
    negatives[1] = positives[0]
    anchors = positives + 0.3 * torch.randn(3, 8)  # each near its positive: losses are small
    columns = [["a0", "a1", "a2"], ["p", "q", "p"], ["n0", "p", "n2"]]
    mask = false_negative_mask(columns)
    assert mask.tolist() == [
        [False, False, True, False, True, False],
        [False, False, False, False, False, False],
        [True, False, False, False, True, False],
    ]
    masked = multiple_negatives_ranking_loss(anchors, positives, negatives, exclude=mask)
    # By hand: each anchor's cross-entropy over the candidates it keeps.
    candidates = torch.cat([positives, negatives])
    scores = (
        20.0
        * torch.nn.functional.normalize(anchors, dim=-1)
        @ (torch.nn.functional.normalize(candidates, dim=-1).T)
    )
    by_hand = torch.stack(
        [torch.logsumexp(scores[i][~mask[i]], dim=0) - scores[i, i] for i in range(3)]
    ).mean()
    assert torch.allclose(masked, by_hand, atol=1e-6)
    plain = multiple_negatives_ranking_loss(anchors, positives, negatives)
    assert masked < plain  # the repeats only ever added to the loss
    assert false_negative_mask([["a", "b"], ["p", "q"], ["n", "m"]]) is None


def test_every_negative_column_is_masked_where_it_repeats_a_positive():
    """n-tuples: a positive repeated in the second negative column is masked there too, and
    the masked loss is the cross-entropy over the candidates each anchor keeps."""
    from embedding.training.losses import false_negative_mask

    columns = [["a0", "a1"], ["p", "q"], ["n0", "n1"], ["m0", "p"]]
    mask = false_negative_mask(columns)
    # Candidates: p, q | n0, n1 | m0, p: anchor 0 loses the second copy of "p" (index 5).
    assert mask.tolist() == [[False] * 5 + [True], [False] * 6]
    torch.manual_seed(1)
    anchors, positives, first, second = (torch.randn(2, 8) for _ in range(4))
    masked = multiple_negatives_ranking_loss(anchors, positives, first, second, exclude=mask)
    candidates = torch.nn.functional.normalize(torch.cat([positives, first, second]), dim=-1)
    scores = 20.0 * torch.nn.functional.normalize(anchors, dim=-1) @ candidates.T
    by_hand = torch.stack(
        [torch.logsumexp(scores[i][~mask[i]], dim=0) - scores[i, i] for i in range(2)]
    ).mean()
    assert torch.allclose(masked, by_hand, atol=1e-6)

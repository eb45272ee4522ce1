"""The code-search recipe's levers (issue 37), their mechanics on tiny data.

- the symmetric loss is its definition (and sentence-transformers'
  ``MultipleNegativesSymmetricRankingLoss`` on the same batch);
- mining runs inside ``finetune``, before the first step, with the starting model: every
  pair keeps its row and gains a negative, never its own positive;
- a planted false negative (the same function under other names, documented by another
  pair) is skipped by the miner's guard and masked by the guided filter in a batch;
- the guided filter changes the loss only by what it masks;
- settings that cannot apply are refused before anything loads.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from embedding.data.examples import DataError
from embedding.inference.encoder import Encoder
from embedding.training.config import TrainConfig
from embedding.training.guide import (
    GUARD_MARGIN,
    GuideVectors,
    guided_mask,
    prepare,
    similar_batches,
)
from embedding.training.loop import finetune
from embedding.training.losses import multiple_negatives_ranking_loss
from embedding.training.steps import embeddings_loss
from tests.tiny_models import MINILM_DIR

# The planted false negative: pair 0's code again, renamed, documented by pair 1 in other
# words. Training must not push query 0 away from it: it answers query 0 too.
PAIRS = [
    ("Return the sum of two numbers.", "def add(a, b):\n    return a + b"),
    ("Add x to y and give the result.", "def plus(x, y):\n    return x + y"),
    ("Open a file and read its lines.", "def read_lines(path):\n    return open(path).readlines()"),
    ("Sort a list of users by age.", "def by_age(users):\n    return sorted(users, key=age)"),
    ("Connect to the database.", "def connect(url):\n    return engine(url).connect()"),
    ("Parse a JSON document.", "def parse(text):\n    return json.loads(text)"),
    ("Send an email to a user.", "def send_mail(user, body):\n    smtp.send(user.email, body)"),
    ("Compute the mean of values.", "def mean(values):\n    return sum(values) / len(values)"),
]
PLANTED = 1  # PAIRS[1]'s code is a false negative of query 0


@pytest.fixture(scope="module")
def encoder():
    found = Encoder.load("minilm", device="cpu", precision="fp32")
    found.model.eval()
    return found


def _by_hand(scores: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of row i picking column i, written out: mean of -log softmax."""
    n = scores.shape[0]
    return -torch.stack([scores[i, i] - torch.logsumexp(scores[i], dim=0) for i in range(n)]).mean()


@pytest.mark.parametrize("width", [2, 3])
def test_the_symmetric_loss_is_its_definition(width):
    torch.manual_seed(0)
    anchor, positive, *negatives = (torch.randn(5, 8) for _ in range(width))
    scale = 20.0
    cos = lambda a, b: F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # noqa: E731
    forward = _by_hand(
        scale * torch.cat([cos(anchor, positive), *(cos(anchor, n) for n in negatives)], 1)
    )
    backward = _by_hand(scale * cos(positive, anchor))  # positive i picks anchor i
    expected = (forward + backward) / 2
    got = multiple_negatives_ranking_loss(anchor, positive, *negatives, scale=scale, symmetric=True)
    plain = multiple_negatives_ranking_loss(anchor, positive, *negatives, scale=scale)
    assert torch.allclose(got, expected, atol=1e-6), (got, expected)
    assert torch.allclose(plain, forward, atol=1e-6)
    assert abs(float(got - plain)) > 1e-4  # the mirror term is really there


def test_the_symmetric_loss_equals_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesSymmetricRankingLoss

    peer = SentenceTransformer(str(MINILM_DIR), device="cpu")
    peer.eval()
    columns = [[a for a, _ in PAIRS], [p for _, p in PAIRS]]
    with torch.no_grad():
        theirs = MultipleNegativesSymmetricRankingLoss(peer)(
            [peer.tokenize(c) for c in columns], None
        ).item()
        a, p = (encoder.embed(encoder.tokenize(c)) for c in columns)
    mine = multiple_negatives_ranking_loss(a, p, symmetric=True).item()
    assert abs(mine - theirs) < 1e-5, (mine, theirs)


def test_the_planted_false_negative_is_near_the_positive(encoder):
    """The premise of the two tests below: the starting model scores pair 1's code within
    the guard of query 0's own code (or above it). Without it they would prove nothing."""
    guide = GuideVectors(encoder, [t for pair in PAIRS for t in pair])
    q, own, planted = guide.of([PAIRS[0][0], PAIRS[0][1], PAIRS[PLANTED][1]])
    assert float(q @ planted) > float(q @ own) - GUARD_MARGIN, (float(q @ planted), float(q @ own))


def test_mining_inside_finetune_skips_the_planted_false_negative(encoder):
    config = TrainConfig(loss="mnrl", hard_negatives=1)
    prepared = prepare(encoder, PAIRS, config)
    assert len(prepared.rows) == len(PAIRS)  # no pair dropped
    assert [row[:2] for row in prepared.rows] == PAIRS  # in order, untouched
    assert all(len(row) == 3 and row[2] != row[1] for row in prepared.rows)
    assert prepared.rows[0][2] != PAIRS[PLANTED][1]  # the guard skipped it
    assert prepared.mining["skipped_false_negatives"] >= 1
    assert any("mined 1 hard negative" in note for note in prepared.notes)
    # The same data and starting model give the same rows (a resumed run trains on them).
    assert prepare(encoder, PAIRS, config).rows == prepared.rows


def test_a_pair_short_of_candidates_keeps_its_row(encoder):
    """Two pairs, each the other's false negative: the guard leaves no candidate, so the
    row is filled with another pair's positive instead of being dropped."""
    pairs = PAIRS[:2]
    prepared = prepare(encoder, pairs, TrainConfig(loss="mnrl", hard_negatives=1))
    assert [row[:2] for row in prepared.rows] == pairs
    assert prepared.mining["rows_filled_at_random"] >= 1
    assert all(row[2] != row[1] for row in prepared.rows)


def test_the_guided_filter_masks_the_planted_false_negative(encoder):
    guide = GuideVectors(encoder, [t for pair in PAIRS for t in pair])
    columns = [[a for a, _ in PAIRS], [p for _, p in PAIRS]]
    mask = guided_mask(guide, columns)
    assert mask is not None and mask[0, PLANTED]
    assert not mask.diagonal().any()  # never the anchor's own positive
    # Mostly a real negative stays one: the filter is not "mask everything".
    assert mask.float().mean() < 0.5


def test_the_guided_filter_changes_the_loss_only_by_its_mask(encoder):
    guide = GuideVectors(encoder, [t for pair in PAIRS for t in pair])
    columns = [[a for a, _ in PAIRS], [p for _, p in PAIRS]]
    torch.manual_seed(1)
    a, p = torch.randn(len(PAIRS), 16), torch.randn(len(PAIRS), 16)
    on = TrainConfig(loss="mnrl", guided_filter=True)
    guided = embeddings_loss(encoder, on, PAIRS, guide)(a, p)
    plain = embeddings_loss(encoder, TrainConfig(loss="mnrl"), PAIRS, guide)(a, p)
    by_mask = multiple_negatives_ranking_loss(a, p, exclude=guided_mask(guide, columns))
    assert torch.allclose(guided, by_mask) and not torch.allclose(guided, plain)


def test_finetune_trains_with_every_lever_and_says_what_it_did():
    said: list[str] = []
    result = finetune(
        "minilm",
        PAIRS,
        TrainConfig(
            loss="mnrl",
            epochs=1,
            batch_size=4,
            symmetric_loss=True,
            hard_negatives=1,
            guided_filter=True,
            precision="fp32",
        ),
        on_prepared=said.append,
    )
    assert len(said) == 2 and "mined" in said[0] and "guided filter" in said[1]
    assert result.preparation == said and result.prepare_seconds > 0
    assert result.settings["rows"] == len(PAIRS)
    assert all(torch.isfinite(torch.tensor(result.epoch_losses)))


def test_levers_that_cannot_apply_are_refused_before_loading():
    with pytest.raises(ValueError, match=r"symmetric_loss.*not 'triplet'"):
        TrainConfig(loss="triplet", symmetric_loss=True).check()
    triplets = [(a, p, "def other(): pass") for a, p in PAIRS]
    with pytest.raises(DataError, match="hard_negatives"):
        finetune("no-such-model", triplets, TrainConfig(loss="mnrl", hard_negatives=1))


@pytest.mark.parametrize("n", [7, 33, 64, 65])
def test_hard_batches_partition_the_rows_as_random_batches_do(n):
    from embedding.training.steps import epoch_batches

    torch.manual_seed(n)
    vectors = F.normalize(torch.randn(n, 16), dim=-1)
    batches = similar_batches(vectors, 8, seed=0, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert len(batches) == len(epoch_batches(n, 8, seed=0, epoch=1))  # the same schedule
    assert all(len(b) > 1 for b in batches)  # never a lone row
    assert similar_batches(vectors, 8, seed=0, epoch=1) == batches  # resume repeats it
    assert similar_batches(vectors, 8, seed=0, epoch=2) != batches


def test_hard_batches_put_alike_rows_together():
    """Four tight clusters of eight in a shuffled order, batch size eight: every batch is one
    cluster. Random batches of the same rows almost never are."""
    from embedding.training.steps import epoch_batches

    torch.manual_seed(0)
    centres = F.normalize(torch.randn(4, 32), dim=-1)
    cluster = torch.randperm(32) % 4
    vectors = F.normalize(centres[cluster] + 0.05 * torch.randn(32, 32), dim=-1)
    for epoch in (1, 2, 3):
        batches = similar_batches(vectors, 8, seed=0, epoch=epoch)
        assert all(len(set(cluster[b].tolist())) == 1 for b in batches), batches
    random_batches = epoch_batches(32, 8, seed=0, epoch=1)
    assert not all(len(set(cluster[b].tolist())) == 1 for b in random_batches)

    # Half alike: each batch's opener brings three of its cluster (those random fills left
    # free), random rows the rest: more of one cluster than random batches, never all.
    def most_of_one(batches):
        return [max(cluster[b].tolist().count(c) for c in range(4)) for b in batches]

    for epoch in (1, 2, 3):
        half = similar_batches(vectors, 8, seed=0, epoch=epoch, share=0.5)
        assert sorted(i for b in half for i in b) == list(range(32))
        most = most_of_one(half)
        assert most[0] >= 4 and sum(most) > sum(most_of_one(epoch_batches(32, 8, 0, epoch)))
        assert any(len(set(cluster[b].tolist())) > 1 for b in half)  # not all one cluster


def test_finetune_with_hard_batches_trains_on_the_alike_batches(monkeypatch):
    """The loop takes its batches from the guide when hard_batches is on."""
    import embedding.training.loop as loop

    seen: list[list[list[int]]] = []
    real = loop.similar_batches
    monkeypatch.setattr(
        loop, "similar_batches", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
    )
    config = TrainConfig(loss="mnrl", epochs=2, batch_size=4, hard_batches=True, precision="fp32")
    said: list[str] = []
    result = finetune("minilm", PAIRS, config, on_prepared=said.append)
    assert len(seen) == 2 and all(
        sorted(i for batch in b for i in batch) == list(range(len(PAIRS))) for b in seen
    )
    assert any("hard batches" in note for note in said)
    assert len(result.epochs) == 2


def test_embedctl_finetune_takes_the_levers_and_says_what_they_did(tmp_path, capsys):
    import json

    from workers.cli import main

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in PAIRS))
    code = main(
        [
            "finetune",
            "--model",
            "minilm",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--hard-batches",
            "--hard-negatives",
            "1",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    printed = capsys.readouterr()
    err, said = printed.err, printed.out + printed.err
    assert code == 0, err
    assert "hard batches, 1 hard negative(s) mined per pair" in err  # the settings line
    assert "mined 1 hard negative(s) per pair" in said and "hard batches on" in said
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()

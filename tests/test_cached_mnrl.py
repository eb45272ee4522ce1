"""Cached MNRL (GradCache) equals plain MNRL and sentence-transformers' cached loss, in loss
value and in the gradient of every parameter (1e-5); dropout is replayed; it trains and
resumes exactly."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from embedding.models.specs import spec_from_folder
from embedding.training.config import TrainConfig
from embedding.training.loop import finetune
from embedding.training.losses import cached_mnrl_backward, multiple_negatives_ranking_loss
from embedding.training.losses.cached_mnrl import length_sorted_chunks
from embedding.training.setup import load_for_training
from embedding.training.steps import batch_backward

# Twelve rows of different lengths, so length-sorted mini-batches mix the columns.
ROWS = [
    (
        "read a file",
        "def read_file(path):\n    with open(path) as f:\n        return f.read()",
        "SELECT 1",
    ),
    ("sum of a list", "def total(xs): return sum(xs)", "class Node: pass"),
    ("open a socket to a host and port", "sock = socket.create_connection((host, port))", "x = 1"),
    ("sort users by age", "users.sort(key=lambda u: u.age)", "import os"),
    ("parse json", "data = json.loads(text)", "for i in range(3): print(i)"),
    ("http get request", "resp = requests.get(url, timeout=5)", "CREATE TABLE t (id int)"),
    ("reverse a string", "s[::-1]", "def handler(event, context): return None"),
    ("count words in a text", "len(text.split())", "async fn fetch() {}"),
    ("current time", "datetime.now(tz=timezone.utc)", "const API = 'x'"),
    (
        "make a directory with parents",
        "Path(p).mkdir(parents=True, exist_ok=True)",
        "while True: pass",
    ),
    ("square root", "math.sqrt(x)", "SELECT name FROM users WHERE id = 1"),
    ("join paths", "os.path.join(a, b)", "console.log('hi')"),
]
# A second hard negative per row, for n-tuples (anchor, positive, negative, negative 2).
SECOND_NEGATIVES = [
    "def write_file(path, text): ...",
    "max(xs)",
    "server.listen(5)",
    "users.reverse()",
    "json.dumps(data)",
    "requests.post(url, json=body)",
    "s.upper()",
    "text.count('a')",
    "time.sleep(1)",
    "shutil.rmtree(p)",
    "x ** 2",
    "os.path.split(p)",
]
MINI = 4


@pytest.fixture(scope="module")
def encoder():
    encoder = load_for_training("minilm", precision="fp32")
    assert encoder.precision == "fp32"
    return encoder


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _assert_same_grads(ours: dict, theirs: dict, atol: float = 1e-5) -> None:
    assert ours.keys() == theirs.keys()
    worst = max((ours[n] - theirs[n]).abs().max().item() for n in ours)
    print(f"largest gradient difference: {worst:.2e}")
    assert worst < atol, worst


def _rows(width: int) -> list[tuple[str, ...]]:
    if width == 4:
        return [(*row, extra) for row, extra in zip(ROWS, SECOND_NEGATIVES, strict=True)]
    return [row[:width] for row in ROWS]


@pytest.mark.parametrize("width", [2, 3, 4], ids=["pairs", "hard-negatives", "n-tuples"])
def test_cached_equals_plain_mnrl_and_sentence_transformers(encoder, width):
    """Loss value and gradients, pairs, triplets and n-tuples; without dropout (eval mode on
    both sides, since the peer cuts its mini-batches per column and we cut them by length,
    so their dropout masks could never agree)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss

    rows = _rows(width)
    model = encoder.model
    model.eval()
    model.zero_grad(set_to_none=True)

    # weight 0.5: the gradient-accumulation factor must reach every mini-batch's gradient
    plain_value = batch_backward(encoder, rows, TrainConfig(loss="mnrl"), 0.5)
    plain = _grads(model)
    cached_value = batch_backward(
        encoder, rows, TrainConfig(loss="cached_mnrl", mini_batch_size=MINI), 0.5
    )
    cached = _grads(model)

    peer = SentenceTransformer(encoder.load_reports[0].path, device="cpu")
    peer.eval()
    peer_loss = CachedMultipleNegativesRankingLoss(peer, scale=20.0, mini_batch_size=MINI)
    columns = [[row[i] for row in rows] for i in range(width)]
    value = peer_loss([peer.preprocess(c) for c in columns], None)
    (value * 0.5).backward()
    peer_value = value.item()
    theirs = {
        n.removeprefix("0.model."): p.grad.detach().clone()
        for n, p in peer.named_parameters()
        if p.grad is not None
    }

    assert plain_value > 0.1  # a loss with something to learn, so the gradients matter
    assert abs(cached_value - plain_value) < 1e-5, (cached_value, plain_value)
    assert abs(cached_value - peer_value) < 1e-5, (cached_value, peer_value)
    assert sum(g.norm() ** 2 for g in plain.values()) ** 0.5 > 1e-2
    _assert_same_grads(cached, plain)
    _assert_same_grads(cached, theirs)


def test_dropout_masks_are_replayed_and_the_rng_stream_is_untouched(encoder):
    """In training mode the second forward pass must reuse the first one's dropout masks.

    Reference: the same mini-batches embedded once each *with* autograd, MNRL on the whole
    batch, one backward. With the masks replayed, GradCache gives the same gradients; and the
    RNG ends where the reference left it (exact resume needs the same random stream).
    """
    model = encoder.model
    model.train()
    columns = [[row[i] for row in ROWS] for i in range(2)]
    loss = functools.partial(multiple_negatives_ranking_loss, scale=20.0)
    texts = [t for c in columns for t in c]
    sequences, _ = encoder.prepare(texts)
    chunks = length_sorted_chunks([len(s) for s in sequences], MINI)
    order = [i for c in chunks for i in c]

    def reference(seed: int) -> tuple[float, dict, torch.Tensor]:
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        parts = [encoder.embed(encoder.collate([sequences[i] for i in c])) for c in chunks]
        embeddings = torch.empty(len(texts), parts[0].shape[1])
        embeddings[order] = torch.cat(parts)
        value = loss(*embeddings.split(len(ROWS)))
        (value * 0.5).backward()
        return value.item(), _grads(model), torch.get_rng_state()

    try:
        ref_value, ref_grads, ref_rng = reference(seed=5)
        torch.manual_seed(5)
        value = cached_mnrl_backward(encoder, columns, loss, MINI, weight=0.5).item()
        grads, rng = _grads(model), torch.get_rng_state()
        _, other_grads, _ = reference(seed=6)
    finally:
        model.eval()
    assert abs(value - ref_value) < 1e-5
    _assert_same_grads(grads, ref_grads)
    assert torch.equal(rng, ref_rng)
    # Dropout does change the gradients, so the equality above says the masks were replayed.
    assert max((other_grads[n] - ref_grads[n]).abs().max().item() for n in ref_grads) > 1e-4


PAIRS = [row[:2] for row in ROWS[:8]]


def _cached(**kw) -> TrainConfig:
    return TrainConfig(loss="cached_mnrl", batch_size=8, mini_batch_size=3, lr=1e-3, **kw)


def test_cached_mnrl_trains_and_resumes_exactly(tiny_jina_dir, tmp_path):
    """On a tiny jina-v3 (dropout 0.1, so the replayed RNG matters for resume too)."""
    spec = spec_from_folder(tiny_jina_dir)
    full = finetune(spec, PAIRS, _cached(epochs=3), checkpoint_dir=tmp_path / "a")
    losses = full.epoch_losses
    assert losses[-1] < losses[0], losses
    first = finetune(
        spec, PAIRS, _cached(epochs=3), checkpoint_dir=tmp_path / "b", stop_after_epoch=1
    )
    assert first.stopped
    rest = finetune(spec, PAIRS, _cached(epochs=3), checkpoint_dir=tmp_path / "b", resume=True)
    np.testing.assert_allclose(rest.epoch_losses, losses, rtol=0, atol=1e-6)

"""The bucketed training forward equals one padded forward, in embeddings and gradients.

minilm in fp32 and eval mode (no dropout, whose masks depend on the chunk shapes), on texts
of very different lengths, with a token budget small enough to cut them into several chunks
that are not in input order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedding.inference.encoder import Encoder
from embedding.inference.length_batching import length_batches
from embedding.training.forward import embed_for_training

TEXTS = [
    "read a file",
    "def parse(text):\n" + "    value = text.strip().split(',')\n" * 60,  # > 256 tokens: cut
    "sort a list of numbers in place",
    "class Cache:\n    def get(self, key):\n        return self.data.get(key)\n" * 3,
    "",
    "SELECT name, email FROM users WHERE active = 1 ORDER BY name",
    "def add(a, b):\n    return a + b",
    "open a socket and send the request bytes, then wait for the reply " * 4,
]
BUDGET = 256  # several chunks for TEXTS (checked below)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    """A copy of its own: these tests put gradients on its parameters."""
    encoder = Encoder.load("minilm", device="cpu", precision="fp32")
    encoder.model.eval()
    return encoder


def _chunks(encoder: Encoder) -> list[list[int]]:
    sequences, _ = encoder.prepare(TEXTS)
    return list(length_batches([len(s) for s in sequences], len(TEXTS), BUDGET))


def _grads(encoder: Encoder, forward) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Embeddings and every parameter's gradient of a fixed weighted sum of them."""
    encoder.model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        embeddings = forward()
        weights = torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(0))
        (embeddings * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in encoder.model.named_parameters() if p.grad is not None}
    encoder.model.zero_grad(set_to_none=True)
    return embeddings.detach(), grads


def test_the_budget_cuts_the_texts_into_chunks_out_of_input_order(encoder):
    """Guards the tests below: they would prove nothing on a single chunk in input order."""
    chunks = _chunks(encoder)
    assert len(chunks) >= 3, chunks
    assert [i for c in chunks for i in c] != list(range(len(TEXTS)))


def test_bucketed_equals_one_padded_forward_in_embeddings_and_gradients(encoder):
    one, one_grads = _grads(encoder, lambda: encoder.embed(encoder.tokenize(TEXTS)))
    bucketed, grads = _grads(encoder, lambda: embed_for_training(encoder, TEXTS, BUDGET))
    assert bucketed.shape == (len(TEXTS), encoder.dim)
    torch.testing.assert_close(bucketed, one, rtol=0, atol=1e-5)
    assert grads.keys() == one_grads.keys() and len(grads) > 50
    for name, grad in grads.items():
        scale = max(1.0, float(one_grads[name].abs().max()))
        torch.testing.assert_close(grad, one_grads[name], rtol=0, atol=1e-5 * scale, msg=name)


def test_each_row_is_its_own_text_alone(encoder):
    """Order is kept: row i is text i embedded on its own (no batch, no padding)."""
    with torch.no_grad():
        bucketed = embed_for_training(encoder, TEXTS, BUDGET)
        alone = torch.cat([encoder.embed(encoder.tokenize([t])) for t in TEXTS])
    torch.testing.assert_close(bucketed, alone, rtol=0, atol=1e-5)
    distinct = torch.cdist(alone, alone) + torch.eye(len(TEXTS))
    assert float(distinct.min()) > 1e-3  # all texts differ, so a swapped row would show


def test_train_mode_draws_the_same_dropout_as_one_sdpa_forward(encoder):
    """With dropout on, the forward switches to eager attention for speed (see the module):
    same seed, same texts in one chunk in sorted order, same embeddings as SDPA's forward;
    and the model runs SDPA again afterwards."""
    similar = [TEXTS[2], TEXTS[5], TEXTS[6], TEXTS[3]]  # close in length: one pass is cheapest
    sequences, _ = encoder.prepare(similar)
    assert len(list(length_batches([len(s) for s in sequences], 64, 100_000))) == 1
    by_tokens = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    texts = [similar[i] for i in by_tokens]  # one chunk, already in length order
    assert encoder.model.config._attn_implementation == "sdpa"
    encoder.model.train()
    try:
        with torch.enable_grad():
            torch.manual_seed(7)
            sdpa = encoder.embed(encoder.tokenize(texts)).detach()
            torch.manual_seed(7)
            ours = embed_for_training(encoder, texts, token_budget=100_000).detach()
            torch.manual_seed(8)
            other_seed = encoder.embed(encoder.tokenize(texts)).detach()
    finally:
        encoder.model.eval()
    assert encoder.model.config._attn_implementation == "sdpa"
    assert float((other_seed - sdpa).abs().max()) > 1e-3  # dropout is on: seeds matter
    torch.testing.assert_close(ours, sdpa, rtol=0, atol=1e-5)


def test_the_training_copy_never_builds_an_inference_twin():
    """Evaluation between epochs runs the trained model itself: no second copy of weights."""
    from embedding.training.setup import load_for_training

    trained = load_for_training("minilm", "bf16")  # asked for: the default may be fp32 here
    served = Encoder.load("minilm", device="cpu", precision=trained.precision)
    if trained.precision == "fp32":
        pytest.skip("no bf16 on this CPU: there is no twin to build")
    np.testing.assert_allclose(trained.encode(TEXTS), served.encode(TEXTS), atol=2e-2)
    assert served._twin is not None and trained._twin is None


def test_no_texts_is_an_error(encoder):
    with pytest.raises(ValueError, match="at least one text"):
        embed_for_training(encoder, [])

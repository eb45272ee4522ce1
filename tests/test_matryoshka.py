"""Matryoshka: the loss is the weighted sum of the base loss at each truncated, renormalized
width; training with it runs on a tiny jina-v3 spec with Matryoshka dims and is evaluated
at each dim; a spec without dims is refused."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from embedding.evaluation.metrics import evaluate, evaluate_at_dims
from embedding.inference.encoder import Encoder
from embedding.models import specs
from embedding.models.specs import spec_from_folder
from embedding.training.config import TrainConfig
from embedding.training.loop import finetune
from embedding.training.losses import MatryoshkaLoss, multiple_negatives_ranking_loss, training_dims
from embedding.training.setup import load_for_training
from embedding.training.steps import batch_backward

PAIRS = [
    ("read a file", "def read_file(path): return open(path).read()"),
    ("sum of a list", "def total(xs): return sum(xs)"),
    ("sort users by age", "users.sort(key=lambda u: u.age)"),
    ("parse json", "data = json.loads(text)"),
    ("http get request", "resp = requests.get(url, timeout=5)"),
    ("reverse a string", "s[::-1]"),
]
DIMS = (16, 32)  # the tiny model is 64 wide


@pytest.fixture(scope="module")
def tiny_matryoshka(tiny_jina_dir):
    return specs.replace(spec_from_folder(tiny_jina_dir), matryoshka_dims=DIMS)


def _hand_mnrl(a: np.ndarray, p: np.ndarray, scale: float) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    scores = scale * a @ p.T
    top = scores.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(scores - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_z - np.diag(scores)))


def test_the_loss_is_the_weighted_sum_over_truncated_renormalized_widths():
    generator = torch.Generator().manual_seed(0)
    a, p = torch.randn(5, 12, generator=generator), torch.randn(5, 12, generator=generator)
    dims, weights = (3, 6, 12), (1.0, 0.5, 2.0)
    base = functools.partial(multiple_negatives_ranking_loss, scale=20.0)
    got = MatryoshkaLoss(base, dims, weights)(a, p).item()
    want = sum(
        w * _hand_mnrl(a[:, :d].double().numpy(), p[:, :d].double().numpy(), 20.0)
        for d, w in zip(dims, weights, strict=True)
    )
    assert abs(got - want) < 1e-4, (got, want)
    # each width counts: dropping one changes the sum
    assert abs(MatryoshkaLoss(base, dims[1:], weights[1:])(a, p).item() - got) > 1e-3


def test_training_dims_add_the_full_width_and_refuse_what_does_not_fit():
    assert training_dims((16, 32), 64) == (16, 32, 64)
    assert training_dims((32, 64, 1024), 1024) == (32, 64, 1024)
    with pytest.raises(ValueError, match="declares none"):
        training_dims((), 64)
    with pytest.raises(ValueError, match=r"\[128\] are not in 1..64"):
        training_dims((16, 128), 64)


def test_matryoshka_on_a_spec_without_dims_is_refused():
    with pytest.raises(ValueError, match="'minilm' declares no Matryoshka dims"):
        finetune("minilm", PAIRS, TrainConfig(loss="mnrl", matryoshka=True))


def test_evaluation_at_each_dim_equals_encoding_at_that_dim(tiny_matryoshka):
    encoder = Encoder.load(tiny_matryoshka, device="cpu", precision="fp32")

    class AtDim:
        def __init__(self, dim):
            self.dim = dim

        def encode(self, texts):
            return encoder.encode(texts, truncate_dim=self.dim)

    got = evaluate_at_dims(encoder, PAIRS, DIMS)
    want = evaluate(encoder, PAIRS)
    for dim in DIMS:
        want |= {f"{k}@dim{dim}": v for k, v in evaluate(AtDim(dim), PAIRS).items()}
    assert got.keys() == want.keys() and "mrr@10@dim16" in got
    for key in got:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_cached_equals_plain_with_matryoshka(tiny_matryoshka):
    encoder = load_for_training(tiny_matryoshka, precision="fp32")
    model = encoder.model
    model.eval()  # no dropout: the two runs cut the batch into different forward passes
    rows = PAIRS
    grads = []
    values = []
    for config in (
        TrainConfig(loss="mnrl", matryoshka=True),
        TrainConfig(loss="cached_mnrl", mini_batch_size=5, matryoshka=True),
    ):
        values.append(batch_backward(encoder, rows, config, 1.0))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    plain_only = batch_backward(encoder, rows, TrainConfig(loss="mnrl"), 1.0)
    assert values[0] > plain_only  # the sum has a term per width (16, 32, 64)
    assert abs(values[0] - values[1]) < 1e-5
    assert grads[0].keys() == grads[1].keys() and grads[0]
    worst = max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0])
    assert worst < 1e-5


def test_matryoshka_training_runs_and_reports_each_dim(tiny_matryoshka, tmp_path):
    result = finetune(
        tiny_matryoshka,
        PAIRS,
        TrainConfig(
            loss="cached_mnrl", mini_batch_size=4, matryoshka=True, epochs=2, batch_size=6, lr=1e-3
        ),
        out_dir=tmp_path / "tuned",
        eval_examples=PAIRS,
    )
    assert all(np.isfinite(result.epoch_losses))
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    for metrics in (result.eval_before, result.epochs[-1].eval, result.eval_after):
        assert {"mrr@10", "mrr@10@dim16", "recall@1@dim32"} <= metrics.keys()
    # The saved model keeps the dims it was trained at: serving may truncate to them.
    saved = spec_from_folder(tmp_path / "tuned")
    assert saved.matryoshka_dims == DIMS
    tuned = Encoder.load(saved, device="cpu", precision="fp32")
    assert tuned.encode(["read a file"], truncate_dim=16).shape == (1, 16)
    with pytest.raises(ValueError, match="not allowed"):
        tuned.encode(["read a file"], truncate_dim=20)

"""Task payloads: every kind of bad input gets a clear error naming what was wrong."""

from __future__ import annotations

import pytest

from workers.schemas import BenchmarkRequest, EmbedRequest, FinetuneRequest, PayloadError, parse

T = {"anchor": "def a", "positive": "def b", "negative": "SELECT 1"}
OK = {"model": "minilm", "triplets": [T]}


def test_a_good_payload_parses_with_defaults():
    request = parse(FinetuneRequest, OK)
    # unset, the recipe's settings wait for the rows; these are triplets: the table's
    assert (request.loss, request.epochs, request.batch_size) == (None, None, None)
    filled = request.hyperparameters()
    assert (filled["loss"], filled["epochs"], filled["batch_size"]) == ("triplet", 3, 16)
    assert request.triplets[0].negative == "SELECT 1"


def test_too_many_rows_are_refused(monkeypatch):
    from core.config import get_settings

    monkeypatch.setenv("EMBEDDING_MAX_TRIPLETS_PER_JOB", "2")
    get_settings.cache_clear()
    try:
        with pytest.raises(PayloadError, match="3 rows, more than the cap of 2"):
            parse(FinetuneRequest, {"model": "minilm", "triplets": [T, T, T]})
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"texts": []}, "texts: List should have at least 1 item"),
        ({"texts": "abc"}, "texts: Input should be a valid list"),
        ({"texts": ["ok", 3]}, "texts.1: Input should be a valid string"),
        ({"texts": ["x" * 100_001]}, "text 0 has 100001 characters"),
        ({"texts": ["a"], "truncate_dim": 0}, "truncate_dim"),
        ({"texts": ["a"], "format": "npy"}, "format: Extra inputs are not permitted"),
    ],
)
def test_bad_embed_payloads(payload, message):
    with pytest.raises(PayloadError, match=message.replace("(", r"\(")):
        parse(EmbedRequest, payload)


def test_benchmark_needs_ten_iterations():
    with pytest.raises(PayloadError, match="iterations"):
        parse(BenchmarkRequest, {"model": "minilm", "iterations": 5})


def test_json_vectors_round_to_nine_decimals_and_keep_order():
    import numpy as np

    from workers.tasks import json_vectors

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((7, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = json_vectors(vectors)
    assert len(rows) == 7 and all(len(r) == 384 for r in rows)
    back = np.asarray(rows)
    assert np.abs(back - vectors).max() <= 5e-10 + 1e-15
    assert all(len(repr(x).split(".")[-1]) <= 9 for x in rows[0]), "short reprs are the point"

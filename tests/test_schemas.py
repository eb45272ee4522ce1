"""Task payloads: every kind of bad input gets a clear error naming what was wrong."""

from __future__ import annotations

import pytest

from workers.schemas import BenchmarkRequest, EmbedRequest, FinetuneRequest, PayloadError, parse

T = {"anchor": "def a", "positive": "def b", "negative": "SELECT 1"}
OK = {"model": "minilm", "triplets": [T]}

BAD_FINETUNE = [
    ("not an object", [1, 2], "must be a JSON object"),
    ("null payload", None, "must be a JSON object"),
    ("missing model", {"triplets": [T]}, "model: Field required"),
    ("no data", {"model": "minilm"}, "exactly one of triplets, pairs or dataset"),
    ("two sources", {**OK, "pairs": [{"anchor": "a", "positive": "b"}]}, "exactly one"),
    ("extra field", {**OK, "learning_rate": 0.1}, "learning_rate: Extra inputs are not permitted"),
    ("empty triplets", {"model": "minilm", "triplets": []}, "triplets is empty"),
    (
        "missing negative",
        {"model": "minilm", "triplets": [{"anchor": "a", "positive": "b"}]},
        "negative: Field required",
    ),
    ("empty anchor", {"model": "minilm", "triplets": [{**T, "anchor": "  "}]}, "anchor is empty"),
    (
        "non-string text",
        {"model": "minilm", "triplets": [{**T, "positive": 7}]},
        "positive: Input should be a valid string",
    ),
    ("triplet as list", {"model": "minilm", "triplets": [["a", "b", "c"]]}, "triplets.0"),
    (
        "text past cap",
        {"model": "minilm", "triplets": [{**T, "anchor": "x" * 100_001}]},
        "more than the cap",
    ),
    ("epochs zero", {**OK, "epochs": 0}, "epochs: Input should be greater than or equal to 1"),
    ("epochs negative", {**OK, "epochs": -3}, "epochs"),
    ("epochs as string", {**OK, "epochs": "3"}, "epochs: Input should be a valid integer"),
    ("lr zero", {**OK, "lr": 0.0}, "lr: Input should be greater than 0"),
    ("lr negative", {**OK, "lr": -1e-4}, "lr: Input should be greater than 0"),
    ("lr NaN", {**OK, "lr": float("nan")}, "lr"),
    ("lr infinite", {**OK, "lr": float("inf")}, "lr"),
    (
        "batch size zero",
        {**OK, "batch_size": 0},
        "batch_size: Input should be greater than or equal to 1",
    ),
    ("unknown loss", {**OK, "loss": "contrastive"}, "loss: Input should be 'triplet' or 'mnrl'"),
    (
        "pairs with triplet loss",
        {"model": "minilm", "pairs": [{"anchor": "a", "positive": "b"}]},
        "needs triplets",
    ),
    ("empty model", {**OK, "model": ""}, "model"),
    ("margin NaN", {**OK, "margin": float("nan")}, "margin"),
    ("idempotency key empty", {**OK, "idempotency_key": ""}, "idempotency_key"),
]


@pytest.mark.parametrize(
    ("kind", "payload", "message"), BAD_FINETUNE, ids=[b[0] for b in BAD_FINETUNE]
)
def test_bad_finetune_payloads_are_named(kind, payload, message):
    with pytest.raises(PayloadError) as info:
        parse(FinetuneRequest, payload)
    assert message in str(info.value), str(info.value)
    assert str(info.value).startswith("FinetuneRequest:")


def test_a_good_payload_parses_with_defaults():
    request = parse(FinetuneRequest, OK)
    assert (request.loss, request.epochs, request.batch_size) == ("triplet", 3, 16)
    assert request.triplets[0].negative == "SELECT 1"


def test_too_many_rows_are_refused(monkeypatch):
    from embedding.config import get_settings

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

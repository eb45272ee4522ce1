"""Data loading, code-search pairs split by module, evaluation, and generalization (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from embedding.codesearch import build_pairs, functions_of, stdlib_root
from embedding.data import DataError, load_examples
from embedding.evaluation import evaluate, retrieval_metrics, triplet_accuracy
from tests.test_cli import ROOT


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["not json"], ":1: not JSON"),
        (['["a", "b"]'], ":1: expected a JSON object"),
        (['{"anchor": "a"}'], ":1: missing field 'positive'"),
        (['{"anchor": "a", "positive": "b", "extra": 1}'], "unknown field"),
        (['{"anchor": "", "positive": "b"}'], ":1: anchor is empty"),
        (['{"anchor": "a", "positive": 2}'], "positive is int"),
        (
            [
                '{"anchor": "a", "positive": "b"}',
                '{"anchor": "a", "positive": "b", "negative": "c"}',
            ],
            "mixes pairs",
        ),
        ([""], "no rows"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path, lines, message):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        load_examples(path)


def test_query_document_names_are_accepted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"query": "sum a list", "document": "def s(x): return sum(x)"}) + "\n"
    )
    assert load_examples(path) == [("sum a list", "def s(x): return sum(x)")]


def test_functions_lose_their_docstring():
    source = '''
def add_numbers(a, b):
    """Add two numbers together and return the result.

    More detail here.
    """
    total = a + b
    return total
'''
    [(query, code)] = list(functions_of(source))
    assert query == "Add two numbers together and return the result."
    assert "Add two numbers" not in code and code.startswith("def add_numbers(a, b):")


def test_stdlib_split_is_by_module_and_deterministic():
    train, evaluation, modules = build_pairs(stdlib_root())
    again = build_pairs(stdlib_root())
    assert (train, evaluation) == (again[0], again[1])
    assert len(train) >= 2000 and len(evaluation) >= 100
    assert modules["eval"] and len(modules["train"]) > len(modules["eval"])
    assert not set(modules["train"]) & set(modules["eval"]), "a module on both sides"
    assert not {code for _, code in train} & {code for _, code in evaluation}, (
        "an eval document seen in training"
    )


def test_evaluation_metrics(minilm_fp32):
    triplets = [("def add(a, b)", "def plus(x, y)", "SELECT * FROM t")]
    assert triplet_accuracy(minilm_fp32, triplets) == 1.0
    pairs = [
        ("add two numbers", "def add(a, b): return a + b"),
        ("open a file", "def read(p): return open(p).read()"),
    ]
    metrics = retrieval_metrics(minilm_fp32, pairs)
    assert metrics["recall@1"] == 1.0 and metrics["mrr@10"] == 1.0
    swapped = [(q, d) for (q, _), (_, d) in zip(pairs, reversed(pairs), strict=True)]
    assert retrieval_metrics(minilm_fp32, swapped)["recall@1"] == 0.0
    assert set(evaluate(minilm_fp32, pairs)) == {"mrr@10", "recall@1"}


@pytest.mark.slow
def test_mnrl_on_stdlib_pairs_generalizes_to_held_out_modules(tmp_path):
    """CLI end to end: build pairs, fine-tune with MNRL, held-out MRR@10 must go up."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "data",
            "codesearch",
            "--source",
            "stdlib",
            "--out",
            str(tmp_path / "cs"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout)
    assert counts["train_pairs"] >= 2000
    report = tmp_path / "report.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "finetune",
            "--model",
            "minilm",
            "--data",
            str(tmp_path / "cs" / "train.jsonl"),
            "--eval-data",
            str(tmp_path / "cs" / "eval.jsonl"),
            "--loss",
            "mnrl",
            "--epochs",
            "1",
            "--lr",
            "5e-5",
            "--batch-size",
            "32",
            "--max-tokens",
            "128",
            "--out",
            str(tmp_path / "ft"),
            "--json",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(report.read_text())
    before, after = figures["eval_before"]["mrr@10"], figures["eval_after"]["mrr@10"]
    print(f"held-out MRR@10 before {before:.4f} after {after:.4f}")
    assert after > before
    assert (tmp_path / "ft" / "model" / "loss_curve.png").stat().st_size > 1000
    assert "eval      before     after" in out.stdout

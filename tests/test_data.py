"""Data loading with errors that name the line, and code-search pairs split by module."""

from __future__ import annotations

import json

import pytest

from embedding.data.codesearch import build_pairs, functions_of, stdlib_root, write_codesearch
from embedding.data.examples import SEED_TRIPLETS, DataError, load_examples, validate_examples


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
            ":2: a triplet, but earlier lines are pairs",
        ),
        ([""], "no rows"),
        (['{"anchor": "a", "positive": "b", "negative": null}'], ":1: negative is NoneType"),
        (['{"query": "a", "anchor": "b", "positive": "c"}'], ":1: .* both give the anchor"),
        (['{"anchor": "a", "positive": "b"}', "", "{oops"], ":3: not JSON"),
        (['{"anchor": "a", "positive": "b", "negatives": []}'], ":1: 'negatives' must be"),
        (['{"anchor": "a", "positive": "b", "negatives": "c"}'], ":1: 'negatives' must be"),
        (['{"anchor": "a", "positive": "b", "negatives": ["c", 4]}'], ":1: negative 2 is int"),
        (
            ['{"anchor": "a", "positive": "b", "negative": "c", "negatives": ["d"]}'],
            ":1: give 'negative' .* not both",
        ),
        (
            [
                '{"anchor": "a", "positive": "b", "negatives": ["c", "d"]}',
                '{"anchor": "a", "positive": "b", "negatives": ["c", "d", "e"]}',
            ],
            ":2: a 3-negative n-tuple, but earlier lines are 2-negative n-tuples",
        ),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path, lines, message):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        load_examples(path)


def test_n_tuples_round_trip_and_one_negative_in_a_list_is_a_triplet(tmp_path):
    """Several negatives per pair are written as a ``negatives`` list (sentence-transformers'
    n-tuple format, one row per pair) and read back as (anchor, positive, n1, n2, ...)."""
    from embedding.data.examples import write_examples

    rows = [("q1", "d1", "n1", "m1", "o1"), ("q2", "d2", "n2", "m2", "o2")]
    path = tmp_path / "tuples.jsonl"
    write_examples(path, rows)
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"anchor": "q1", "positive": "d1", "negatives": ["n1", "m1", "o1"]}
    assert load_examples(path) == rows
    single = tmp_path / "single.jsonl"
    single.write_text(json.dumps({"anchor": "q", "positive": "d", "negatives": ["n"]}) + "\n")
    assert load_examples(single) == [("q", "d", "n")]


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
    for rows in (train, evaluation):  # no contradictory labels for in-batch negatives
        assert len({q for q, _ in rows}) == len(rows) == len({c for _, c in rows})


def test_bad_bytes_and_missing_files_are_data_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"anchor": "a", "positive": "b"}\n{"anchor": "\xff", "positive": "b"}\n')
    with pytest.raises(DataError, match=r":2: not UTF-8"):
        load_examples(path)
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "missing.jsonl")


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"anchor": "a", "positive": "b"}).encode())
    assert load_examples(path) == [("a", "b")]


def test_seed_triplets_are_valid_triplets():
    assert validate_examples(SEED_TRIPLETS) == SEED_TRIPLETS and len(SEED_TRIPLETS) == 5


def test_private_tiny_and_undocumented_functions_are_skipped():
    source = '''
def _private(a):
    """Private helpers are not part of an API to search."""
    x = a
    return x

def __dunder__(a):
    """Dunder methods are protocol plumbing, not search targets."""
    x = a
    return x

def tiny(a):
    """A one line function is too small to search for."""
    return a

def short_doc(a):
    """Two words."""
    x = a
    y = x
    return y

def undocumented(a):
    x = a
    y = x
    return y

class Box:
    def unpack(self, item):
        """Unpack an item from the box and return it."""
        value = item
        return value
'''
    assert [query for query, _ in functions_of(source)] == [
        "Unpack an item from the box and return it."
    ]


def test_write_codesearch_writes_disjoint_jsonl(tmp_path):
    package = tmp_path / "src"
    for name in ("alpha", "beta", "gamma", "delta"):
        (package / name).mkdir(parents=True)
        (package / name / "mod.py").write_text(
            f'''
def {name}_sum(values):
    """Add up the {name} values and return the total."""
    total = 0
    for v in values:
        total += v
    return total
'''
        )
    counts = write_codesearch(tmp_path / "out", source=str(package), eval_share=0.5)
    train = load_examples(tmp_path / "out" / "train.jsonl")
    evaluation = load_examples(tmp_path / "out" / "eval.jsonl")
    assert counts["train_pairs"] == len(train) and counts["eval_pairs"] == len(evaluation)
    assert len(train) + len(evaluation) == 4 and train and evaluation
    assert not {q for q, _ in train} & {q for q, _ in evaluation}

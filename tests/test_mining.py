"""Hard-negative mining (``embedding/training/mining.py``) and ``embedctl data mine-negatives``.

The numeric core is checked against a brute-force reference on random vectors (hypothesis);
the text level runs on the real bundled minilm with a few dozen constructed rows.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedding.data.examples import DataError, load_examples, write_examples
from embedding.training.mining import MiningConfig, mine_from_vectors, mine_hard_negatives

ROOT = Path(__file__).resolve().parents[1]
EMBEDCTL = [sys.executable, "-m", "workers.cli"]

_VERBS = ["load", "save", "parse", "sort", "count", "merge", "delete", "render"]
_NOUNS = ["user", "order", "config", "invoice"]


def code_pairs() -> list[tuple[str, str]]:
    """32 (docstring, code) pairs: every verb with every noun, so each anchor has close
    relatives (same verb, other noun) that are true negatives."""
    pairs = []
    for verb in _VERBS:
        for noun in _NOUNS:
            anchor = f"{verb.title()} the {noun} record and return the result."
            code = (
                f"def {verb}_{noun}(store, key):\n"
                f"    item = store.{verb}('{noun}', key)\n"
                f"    return item"
            )
            pairs.append((anchor, code))
    return pairs


# ------------------------------------------------------------ the numeric core
def reference(anchors, corpus, positives_of, own_text, config):
    """Per anchor, one candidate at a time, in plain Python: what ``top`` must pick."""
    picks = []
    for a, vector in enumerate(anchors):
        scores = corpus.astype(np.float64) @ vector.astype(np.float64)
        lowest = min(scores[p] for p in positives_of[a])
        limit = math.inf if config.margin is None else lowest - config.margin
        if config.max_score is not None:
            limit = min(limit, config.max_score)
        valid = [
            c
            for c in range(len(corpus))
            if c not in positives_of[a] and c != own_text[a] and scores[c] <= limit
        ]
        valid.sort(key=lambda c: -scores[c])
        picks.append(valid[: config.num_negatives])
    return picks


@st.composite
def problems(draw):
    """Random unit vectors, anchors with 1-3 positives (shared between anchors too), some
    anchors whose own text is in the corpus, and random guard settings."""
    n_anchors = draw(st.integers(1, 12))
    n_corpus = draw(st.integers(1, 15))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(n_anchors, 8)).astype(np.float32)
    corpus = rng.normal(size=(n_corpus, 8)).astype(np.float32)
    anchors /= np.linalg.norm(anchors, axis=1, keepdims=True)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    positives_of = [
        sorted(set(rng.integers(0, n_corpus, size=rng.integers(1, 4)).tolist()))
        for _ in range(n_anchors)
    ]
    own_text = [int(rng.integers(0, n_corpus)) if rng.random() < 0.3 else -1 for _ in anchors]
    num_negatives = draw(st.integers(1, 3))
    config = MiningConfig(
        num_negatives=num_negatives,
        top_k=num_negatives + draw(st.integers(0, 4)),
        margin=draw(st.one_of(st.none(), st.floats(0.0, 0.5))),
        max_score=draw(st.one_of(st.none(), st.floats(-0.5, 1.0))),
        chunk_size=draw(st.integers(1, 5)),
    )
    return anchors, corpus, positives_of, own_text, config


@settings(max_examples=150, deadline=None)
@given(problems())
def test_the_core_never_picks_a_positive_and_picks_what_the_reference_picks(problem):
    anchors, corpus, positives_of, own_text, config = problem
    picks, scores, _, stats = mine_from_vectors(anchors, corpus, positives_of, own_text, config)
    expected = reference(anchors, corpus, positives_of, own_text, config)
    for a, chosen in enumerate(picks):
        assert not set(chosen) & set(positives_of[a]), (a, chosen, positives_of[a])
        assert own_text[a] not in chosen
        assert len(chosen) == len(set(chosen)) <= config.num_negatives
        assert scores[a] == sorted(scores[a], reverse=True)
        lowest = min(float(anchors[a] @ corpus[p]) for p in positives_of[a])
        for score in scores[a]:
            assert config.margin is None or score <= lowest - config.margin + 1e-6
            assert config.max_score is None or score <= config.max_score + 1e-6
        # Same picks as one-at-a-time float64 scoring (a float32 near-tie may swap order).
        assert sorted(chosen) == sorted(expected[a]) or np.allclose(
            sorted(corpus[chosen] @ anchors[a]), sorted(corpus[expected[a]] @ anchors[a]), atol=1e-5
        )
    assert stats.anchors_dropped == sum(1 for p in picks if not p)
    assert stats.anchors_mined + stats.anchors_dropped == len(anchors)


def test_random_sampling_stays_in_the_pool_and_does_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(3)
    anchors = rng.normal(size=(40, 16)).astype(np.float32)
    corpus = rng.normal(size=(60, 16)).astype(np.float32)
    anchors /= np.linalg.norm(anchors, axis=1, keepdims=True)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    positives_of = [[i] for i in range(40)]
    own = [-1] * 40
    runs = [
        mine_from_vectors(
            anchors,
            corpus,
            positives_of,
            own,
            MiningConfig(num_negatives=2, top_k=6, sampling="random", seed=5, chunk_size=size),
        )[0]
        for size in (1, 7, 1024)
    ]
    assert runs[0] == runs[1] == runs[2]
    top = mine_from_vectors(
        anchors, corpus, positives_of, own, MiningConfig(num_negatives=6, top_k=6)
    )[0]
    assert all(set(r) <= set(t) for r, t in zip(runs[0], top, strict=True))  # from the pool
    assert runs[0] != [t[:2] for t in top]  # and not simply its two hardest


# ------------------------------------------------------------ texts, real minilm
def test_mining_never_returns_a_positive_or_a_copy_of_one(minilm):
    """Duplicated rows, an anchor with two positives, a positive shared by two anchors, an
    anchor that is also a corpus text, and an exact copy of a positive in the extra corpus;
    with the guard off, so only the positive rule keeps them out."""
    pairs = code_pairs()
    pairs += [pairs[0], pairs[5]]  # duplicated rows
    pairs.append((pairs[1][0], pairs[2][1]))  # anchor 1 gets a second positive
    pairs.append(("Fetch the user record.", pairs[0][1]))  # a positive shared by two anchors
    pairs.append((pairs[3][1], pairs[4][1]))  # an anchor that is a corpus text
    corpus = [pairs[7][1], pairs[9][1], "def unrelated():\n    return 42"]
    config = MiningConfig(num_negatives=3, top_k=5, margin=None)
    mined = mine_hard_negatives(pairs, minilm, config, corpus=corpus)

    positives: dict[str, set[str]] = {}
    for anchor, positive in pairs:
        positives.setdefault(anchor, set()).add(positive)
    assert mined.triplets
    for anchor, positive, negative in mined.triplets:
        assert negative != positive and negative != anchor
        assert negative not in positives[anchor]
    assert {(a, p) for a, p, _ in mined.triplets} == set(pairs)  # nobody dropped here
    assert mined.stats.pairs == len(pairs) and mined.stats.triplets == len(mined.triplets)
    assert mined.stats.corpus == len({p for _, p in pairs} | set(corpus))


def test_the_guard_skips_a_near_duplicate_of_the_positive(minilm):
    anchor = "Add two numbers and return their sum."
    positive = "def add(a, b):\n    return a + b"
    near_duplicate = "def add(a, b):\n    return a+b"  # the positive, spaces dropped
    others = [
        "def subtract(a, b):\n    return a - b",
        "def read_file(path):\n    with open(path) as fh:\n        return fh.read()",
        "SELECT name FROM users WHERE id = 1",
    ]
    pairs = [(anchor, positive), ("Read a whole file into a string.", others[1])]
    corpus = [near_duplicate, others[0], others[2]]
    vectors = minilm.encode([anchor, positive, near_duplicate])
    # Within the margin of the positive's score (above or below it): the guard's case.
    assert float(vectors[0] @ vectors[2]) > float(vectors[0] @ vectors[1]) - 0.05

    unguarded = mine_hard_negatives(pairs, minilm, MiningConfig(margin=None), corpus=corpus)
    assert unguarded.triplets[0] == (anchor, positive, near_duplicate)  # the hardest candidate

    guarded = mine_hard_negatives(pairs, minilm, MiningConfig(margin=0.05), corpus=corpus)
    (row,) = [t for t in guarded.triplets if t[0] == anchor]
    assert row[2] != near_duplicate
    assert guarded.stats.skipped_false_negatives >= 1 and guarded.stats.anchors_guarded >= 1
    negative = minilm.encode([row[2]])[0]
    assert float(vectors[0] @ negative) <= float(vectors[0] @ vectors[1]) - 0.05


def test_mining_is_deterministic_given_the_seed(minilm):
    pairs = code_pairs()

    def mine(seed: int, chunk_size: int = 1024):
        config = MiningConfig(top_k=8, sampling="random", seed=seed, chunk_size=chunk_size)
        return mine_hard_negatives(pairs, minilm, config).triplets

    first = mine(1)
    assert mine(1) == first
    assert mine(1, chunk_size=5) == first
    assert any(mine(seed) != first for seed in (2, 3, 4))  # the seed is what decides


def test_n_tuples_hold_each_pairs_negatives_in_one_row(minilm):
    """The n-tuple format: one row per pair, holding exactly the negatives the triplet format
    spreads over rows (same order, hardest first), never the positive; the epoch keeps its
    number of rows."""
    from dataclasses import replace

    pairs = code_pairs()
    config = MiningConfig(num_negatives=3, top_k=5, margin=None)
    triplets = mine_hard_negatives(pairs, minilm, config).triplets
    tuples = mine_hard_negatives(pairs, minilm, replace(config, output_format="n-tuple"))
    grouped: dict[tuple[str, str], list[str]] = {}
    for anchor, positive, negative in triplets:
        grouped.setdefault((anchor, positive), []).append(negative)
    assert [row[:2] for row in tuples.triplets] == pairs  # one row per pair, in order
    for row in tuples.triplets:
        assert len(row) == 5 and list(row[2:]) == grouped[row[:2]]
        assert row[1] not in row[2:] and len(set(row[2:])) == 3
    assert tuples.stats.triplets == len(pairs)


class _Vectors:
    """Fixed unit vectors per text: the mining rules on a constructed geometry."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = {t: np.asarray(v, dtype=np.float32) for t, v in vectors.items()}

    def encode(self, texts, **kwargs):
        rows = np.stack([self.vectors[t] for t in texts])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_an_anchor_short_of_negatives_is_dropped_from_n_tuples_only():
    """Anchor "a0" has one valid candidate ("p1" scores 0.95 with it, above ``max_score``):
    as triplets it keeps that one row, as n-tuples of two it cannot fill its row and is
    dropped, counted; the other anchors keep both negatives."""
    from dataclasses import replace

    encoder = _Vectors(
        {
            "a0": [1, 0, 0],
            "p0": [0, 1, 0],
            "p1": [0.95, 0.312, 0],
            "p2": [0.3, 0, 0.954],
            "a1": [0, 0.6, 0.8],
            "a2": [0.5, 0.5, 0.707],
        }
    )
    pairs = [("a0", "p0"), ("a1", "p1"), ("a2", "p2")]
    config = MiningConfig(num_negatives=2, top_k=2, margin=None, max_score=0.9)
    triplets = mine_hard_negatives(pairs, encoder, config)
    assert [t for t in triplets.triplets if t[0] == "a0"] == [("a0", "p0", "p2")]
    tuples = mine_hard_negatives(pairs, encoder, replace(config, output_format="n-tuple"))
    assert [row[:2] for row in tuples.triplets] == [("a1", "p1"), ("a2", "p2")]
    assert all(len(row) == 4 for row in tuples.triplets)
    assert tuples.stats.pairs_dropped == 1 and tuples.stats.anchors_short == 1


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "empty"),
        ([("a", "b", "c")], "triplets"),
        ([("a", "")], "positive is empty"),
    ],
)
def test_bad_pairs_are_refused_before_any_encoding(rows, message):
    class NeverCalled:
        def encode(self, texts, **kwargs):
            raise AssertionError("encoded before the data was checked")

    with pytest.raises(DataError, match=message):
        mine_hard_negatives(rows, NeverCalled())


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"top_k .* at least num_negatives"):
        MiningConfig(num_negatives=3, top_k=2).check()
    with pytest.raises(ValueError, match="margin") as caught:
        MiningConfig(margin=-1.0, sampling="best", output_format="pairs").check()
    assert "sampling" in str(caught.value) and "output_format" in str(caught.value)


# --------------------------------------------------------------------- the CLI
def embedctl(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*EMBEDCTL, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )


@pytest.mark.slow
def test_cli_mines_triplets_that_train_with_triplet_and_mnrl(tmp_path):
    from embedding.training.config import TrainConfig
    from embedding.training.loop import finetune

    pairs = tmp_path / "pairs.jsonl"
    write_examples(pairs, code_pairs())
    out = tmp_path / "triplets.jsonl"
    done = embedctl("data", "mine-negatives", "--data", str(pairs), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # --json: one JSON object, nothing else
    triplets = load_examples(out)
    assert summary["triplets"] == len(triplets) == summary["pairs"] - summary["pairs_dropped"]
    assert summary["pairs"] == len(code_pairs()) and summary["out"] == str(out)
    assert all(len(t) == 3 and t[2] != t[1] for t in triplets)

    for loss in ("triplet", "mnrl"):
        config = TrainConfig(loss=loss, epochs=1, batch_size=16)
        result = finetune("minilm", triplets, config, eval_examples=triplets[:2])  # brief eval
        assert len(result.epochs) == 1 and math.isfinite(result.epoch_losses[0]), loss
        assert result.settings["rows"] == len(triplets)

    # n-tuples: one row per pair with two negatives each, which MNRL trains on.
    tuples_out = tmp_path / "tuples.jsonl"
    options = ["--format", "n-tuple", "--num-negatives", "2", "--top-k", "4"]
    done = embedctl(
        "data", "mine-negatives", "--data", str(pairs), "--out", str(tuples_out), *options
    )
    assert done.returncode == 0, done.stderr
    tuples = load_examples(tuples_out)
    # Without --json: a few lines for a person, the first of them the rows written.
    lines = done.stdout.splitlines()
    assert lines[0].startswith(
        f"{len(tuples)} n-tuples, 2 negatives each, from {len(code_pairs())} pairs"
    ), done.stdout
    assert lines[-1] == f"wrote {tuples_out}" and len(lines) <= 7, done.stdout
    assert tuples and all(len(row) == 4 and row[1] not in row[2:] for row in tuples)
    config = TrainConfig(loss="mnrl", epochs=1, batch_size=16)
    result = finetune("minilm", tuples, config, eval_examples=tuples[:2])
    assert math.isfinite(result.epoch_losses[0]) and result.settings["rows"] == len(tuples)
    assert "triplet_accuracy" in result.eval_after  # an n-tuple is a triplet per negative


@pytest.mark.parametrize(
    ("content", "extra", "needle"),
    [
        ('{"anchor": "a b", "positive": "c d", "negative": "e f"}\n', [], "triplets"),
        ("", [], "no rows"),
        ('{"anchor": "a b", "positive": "c d"}\n', ["--model", "no-such-model"], "unknown model"),
        ('{"anchor": "a b", "positive": "c d"}\n', ["--top-k", "0"], "top_k must be"),
        ('{"anchor": "a b", "positive": "c d"}\n', ["--corpus", "MISSING"], "no such file"),
        ('{"anchor": "a b", "positive": "c d"}\n', [], "no pair .* has a valid negative"),
    ],
)
def test_cli_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, content, extra, needle):
    import re

    data = tmp_path / "pairs.jsonl"
    data.write_text(content)
    out = tmp_path / "out.jsonl"
    extra = [str(tmp_path / "missing.jsonl") if x == "MISSING" else x for x in extra]
    done = embedctl("data", "mine-negatives", "--data", str(data), "--out", str(out), *extra)
    assert done.returncode == 1, done.stderr
    assert re.search(needle, done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))

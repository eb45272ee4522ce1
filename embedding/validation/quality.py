"""Check 2, inference quality: shape, norms, pairwise scores, related > unrelated, edge cases.

The seed's similarity "in [0, 1]" was a raw cosine, which is not always >= 0 (two of ten are
slightly negative on minilm): we report the raw cosine *and* the score ``(1 + cos) / 2``, a
documented order-preserving map into [0, 1], for every pair.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from typing import Any

import numpy as np

from embedding.validation.results import CheckResult, ResultBuilder, guarded

# The seed's five snippets (check 2).
SEED_SNIPPETS = (
    "def hello_world: return 42",
    "async fn fetch_data() {}",
    "class MyClass: pass",
    "SELECT * FROM users WHERE id = 1",
    "const API_URL = 'https://api.example.com'",
)

# (related pair) must score above (unrelated pair). The first is the seed's own.
SIMILAR_VS_UNRELATED = (
    (
        ("def calculate_sum(): return sum", "def compute_total(): return total"),
        ("def hello_world(): return 42", "SELECT COUNT(*) FROM users WHERE id > 100"),
    ),
    (
        ("SELECT name FROM users WHERE id = 1", "SELECT email FROM customers WHERE id = 2"),
        ("SELECT name FROM users WHERE id = 1", "async fn fetch_data() {}"),
    ),
    (
        ("class UserRepository: pass", "class AccountRepository: pass"),
        ("class UserRepository: pass", "const API_URL = 'https://api.example.com'"),
    ),
    (
        ("for item in items: print(item)", "for row in rows: print(row)"),
        ("for item in items: print(item)", "CREATE TABLE orders (id INT PRIMARY KEY)"),
    ),
    (
        (
            "def read_file(path): return open(path).read()",
            "def load_text(p): return open(p).read()",
        ),
        ("def read_file(path): return open(path).read()", "console.log('hello world')"),
    ),
)

EDGE_CASES = {
    "empty": "",
    "10KB code": ("def f(x):\n    return x * 2\n" * 400)[:10_240],
    "emoji": "def 🚀(): return '🎉✨'",
    "CJK": "def 计算总和(数字): return sum(数字)  # 合計を計算する",
    "tabs and newlines": "\tdef f():\n\t\treturn 1\n\n\r\n",
}

# Thresholds (the seed's criteria).
NORM_TOLERANCE = 1e-3
IDENTICAL_MIN = 0.99
REPRODUCIBLE_ATOL = 1e-5


def similarity_score(cosine: float) -> float:
    """The seed's [0, 1] similarity score: ``(1 + cos) / 2``, order-preserving, never clamped."""
    return (1.0 + cosine) / 2.0


@guarded
def check_inference_quality(model: str, load: Callable[[str], Any] | None = None) -> CheckResult:
    """Shape, norms, ranges, pairwise scores, related > unrelated, reproducibility, edge cases."""
    from embedding.models.specs import get_spec

    check = ResultBuilder("inference_quality")
    encoder = check.load(model, load)
    if encoder is None:
        return check.result()
    spec = get_spec(model) if isinstance(model, str) else encoder.spec
    vectors = encoder.encode(list(SEED_SNIPPETS))
    finite = bool(np.isfinite(vectors).all())
    norms = np.linalg.norm(vectors, axis=1)
    check.figures["model"] = encoder.spec.name
    check.figures["dims"] = int(vectors.shape[1])
    check.figures["norms"] = [round(float(n), 6) for n in norms]
    check.figures["min_value"] = float(vectors.min())
    check.figures["max_value"] = float(vectors.max())
    check.criterion(
        "dimensions", f"== {spec.dim}", int(vectors.shape[1]), vectors.shape[1] == spec.dim
    )
    worst_norm = float(np.abs(norms - 1).max())
    check.criterion(
        "L2 norm",
        f"|norm - 1| <= {NORM_TOLERANCE:g}",
        round(worst_norm, 8),
        worst_norm <= NORM_TOLERANCE,
    )
    in_range = bool(vectors.min() >= -1 and vectors.max() <= 1)
    check.criterion(
        "values in [-1, 1]",
        "[-1, 1]",
        [round(check.figures["min_value"], 4), round(check.figures["max_value"], 4)],
        in_range,
    )
    check.criterion("no NaN or Inf", "finite", finite, finite)

    pairs = []
    for i, j in combinations(range(len(SEED_SNIPPETS)), 2):
        cosine = float(vectors[i] @ vectors[j])
        pairs.append(
            {
                "a": SEED_SNIPPETS[i],
                "b": SEED_SNIPPETS[j],
                "cosine": round(cosine, 6),
                "score": round(similarity_score(cosine), 6),
            }
        )
    check.figures["pairs"] = pairs
    scores = [p["score"] for p in pairs]
    check.criterion(
        "pairwise scores in [0, 1] (score = (1 + cos) / 2)",
        f"{len(pairs)} of 10 in [0, 1]",
        [round(min(scores), 4), round(max(scores), 4)],
        len(pairs) == 10 and all(0.0 <= s <= 1.0 for s in scores),
    )

    comparisons = []
    for related, unrelated in SIMILAR_VS_UNRELATED:
        emb = encoder.encode([*related, *unrelated])
        rel, unrel = float(emb[0] @ emb[1]), float(emb[2] @ emb[3])
        comparisons.append(
            {
                "related": list(related),
                "unrelated": list(unrelated),
                "related_cos": round(rel, 4),
                "unrelated_cos": round(unrel, 4),
                "ok": rel > unrel,
            }
        )
    check.figures["similar_vs_unrelated"] = comparisons
    won = sum(c["ok"] for c in comparisons)
    check.criterion(
        "similar texts are more similar",
        f"{len(comparisons)} of {len(comparisons)}",
        won,
        won == len(comparisons),
    )

    twice = encoder.encode([SEED_SNIPPETS[0], SEED_SNIPPETS[0]])
    identical = float(twice[0] @ twice[1])
    check.criterion(
        "identical texts", f"> {IDENTICAL_MIN}", round(identical, 6), identical > IDENTICAL_MIN
    )
    again = encoder.encode(list(reversed(SEED_SNIPPETS)))[::-1]
    drift = float(np.abs(again - vectors).max())
    check.criterion(
        "reproducible", f"max |diff| <= {REPRODUCIBLE_ATOL:g}", drift, drift <= REPRODUCIBLE_ATOL
    )

    edge = encoder.encode(list(EDGE_CASES.values()))
    edge_norms = np.linalg.norm(edge, axis=1)
    handled = {
        name: bool(np.isfinite(edge[k]).all() and abs(edge_norms[k] - 1) <= NORM_TOLERANCE)
        for k, name in enumerate(EDGE_CASES)
    }
    check.figures["edge_cases"] = handled
    check.criterion(
        "edge cases handled",
        f"{len(EDGE_CASES)} of {len(EDGE_CASES)}",
        sum(handled.values()),
        all(handled.values()),
    )
    return check.result()

"""A deterministic corpus of code snippets: one-liners and 20-60 line functions.

Shared by the parity tests and benchmarks/encode.py, so the figures in RESULTS.md come
from the same texts the tests check.
"""

from __future__ import annotations

import random

_NAMES = ["data", "value", "items", "result", "config", "user", "order", "path", "index", "count"]
_VERBS = ["load", "parse", "fetch", "compute", "merge", "filter", "render", "validate", "sort"]
_ONE_LINERS = [
    "def {v}_{n}(x): return x",
    "SELECT * FROM {n} WHERE id = {i}",
    "const {N} = '{v}';",
    "async fn {v}_{n}() {{}}",
    "class {N}Handler: pass",
    "import {n}",
    "for {n} in {v}(): print({n})",
    "{n} = [{v}(i) for i in range({i})]",
]


def code_corpus(n: int = 1000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for k in range(n):
        v, name = rng.choice(_VERBS), rng.choice(_NAMES)
        if k % 2 == 0:
            texts.append(rng.choice(_ONE_LINERS).format(v=v, n=name, N=name.upper(), i=k))
            continue
        lines = [
            f"def {v}_{name}_{k}({name}, limit={k % 97}):",
            f'    """{v.title()} the {name}."""',
        ]
        for j in range(rng.randint(20, 60)):
            a, b = rng.choice(_NAMES), rng.choice(_NAMES)
            lines.append(
                rng.choice(
                    [
                        f"    {a} = {rng.choice(_VERBS)}({b}, {j})",
                        f"    if {a} > {j}:",
                        f"        {b}.append({a})",
                        f"    for {a} in {b}:",
                        f"        total += {a} * {j}",
                        f"    # {rng.choice(_VERBS)} {a} before {b}",
                        f"    return {a}",
                    ]
                )
            )
        texts.append("\n".join(lines))
    return texts

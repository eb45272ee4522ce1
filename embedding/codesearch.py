"""Code-search pairs from Python sources, the CodeSearchNet way.

Query: the first line/paragraph of a function's docstring. Document: the function's code
with its docstring removed (so the answer is not in the question). Train and eval are split
*by module*, so no module has functions on both sides and the eval measures generalization.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from embedding.data import Example, write_examples

MIN_DOC_WORDS = 3
MIN_CODE_LINES = 3
MAX_CODE_CHARS = 4000


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _summary(docstring: str) -> str:
    first = docstring.strip().split("\n\n", 1)[0]
    return " ".join(first.split())


def functions_of(source: str) -> Iterator[tuple[str, str]]:
    """(docstring summary, code without docstring) for each public, documented function."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith(
            "_"
        ):
            continue
        doc = ast.get_docstring(node)
        if not doc or len(_summary(doc).split()) < MIN_DOC_WORDS:
            continue
        body = node.body[1:]  # drop the docstring expression
        if not body:
            continue
        stripped = ast.FunctionDef(
            name=node.name,
            args=node.args,
            body=body,
            decorator_list=[],
            returns=node.returns,
            type_comment=None,
        )
        try:
            code = ast.unparse(ast.fix_missing_locations(stripped))
        except Exception:  # a construct unparse cannot rebuild: skip the function
            continue
        if code.count("\n") + 1 < MIN_CODE_LINES or len(code) > MAX_CODE_CHARS:
            continue
        yield _summary(doc), code


def build_pairs(
    root: Path, eval_share: float = 0.1
) -> tuple[list[Example], list[Example], dict[str, list[str]]]:
    """Walk ``root``'s modules in sorted order; a module goes to eval by a hash of its name.

    Repeated queries and documents are dropped (see :func:`_unique`), and so are eval
    functions copied verbatim from a training module (the stdlib has a few): no eval
    document is one the model trained on.
    """
    train: list[Example] = []
    evaluation: list[Example] = []
    modules: dict[str, list[str]] = {"train": [], "eval": []}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(
            part in ("test", "tests", "idlelib", "site-packages", "lib2to3")
            for part in path.relative_to(root).parts
        ):
            continue
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        pairs = list(functions_of(source))
        if not pairs:
            continue
        bucket = int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        side = "eval" if bucket < eval_share else "train"
        modules[side].append(rel)
        (evaluation if side == "eval" else train).extend(pairs)
    train = _unique(train)
    seen = {code for _, code in train}
    evaluation = [pair for pair in _unique(evaluation) if pair[1] not in seen]
    return train, evaluation, modules


def _unique(pairs: list[Example]) -> list[Example]:
    """First pair of each query and of each document.

    A query repeated with other code ("Emit a record." has 11 handlers in the stdlib) is
    a contradictory label for in-batch negatives and an unanswerable eval query.
    """
    queries: set[str] = set()
    documents: set[str] = set()
    kept = []
    for query, code in pairs:
        if query in queries or code in documents:
            continue
        queries.add(query)
        documents.add(code)
        kept.append((query, code))
    return kept


def write_codesearch(out: Path, source: str = "stdlib", eval_share: float = 0.1) -> dict[str, int]:
    if source != "stdlib":
        root = Path(source)
        if not root.is_dir():
            raise ValueError(f"source must be 'stdlib' or a folder of Python files, got {source!r}")
    else:
        root = stdlib_root()
    train, evaluation, modules = build_pairs(root, eval_share)
    out.mkdir(parents=True, exist_ok=True)
    write_examples(out / "train.jsonl", train)
    write_examples(out / "eval.jsonl", evaluation)
    return {
        "train_pairs": len(train),
        "eval_pairs": len(evaluation),
        "train_modules": len(modules["train"]),
        "eval_modules": len(modules["eval"]),
    }

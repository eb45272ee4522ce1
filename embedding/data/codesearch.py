"""Code-search pairs, the CodeSearchNet way: the entry points the benchmarks and CLI use.

Query: the summary of a function's doc. Document: the function's code with its doc removed
(so the answer is not in the question). Train and eval are split *by file*, so no file has
functions on both sides and the eval measures generalization. The work is done by
``embedding.data.code_pairs`` (several languages, packages and checkouts, deduplication, the
report); this module keeps the Python-only names of the first version.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from embedding.data.code_pairs import build_code_pairs, write_code_pairs
from embedding.data.code_pairs.functions import MAX_CODE_CHARS, MIN_CODE_LINES, MIN_DOC_WORDS
from embedding.data.code_pairs.python_source import extract_python
from embedding.data.code_pairs.sources import stdlib_root
from embedding.data.examples import Example

__all__ = [
    "MAX_CODE_CHARS",
    "MIN_CODE_LINES",
    "MIN_DOC_WORDS",
    "build_pairs",
    "functions_of",
    "stdlib_root",
    "write_codesearch",
]


def functions_of(source: str | bytes) -> Iterator[tuple[str, str]]:
    """(docstring summary, code without docstring) for each public, documented function."""
    for function in extract_python(source).functions:
        yield function.query, function.code


def build_pairs(
    root: Path, eval_share: float = 0.1
) -> tuple[list[Example], list[Example], dict[str, list[str]]]:
    """(train, eval, files of each side) from one folder (the stdlib's, or any checkout)."""
    root = Path(root).resolve()
    source = "stdlib" if root == stdlib_root().resolve() else str(root)
    built = build_code_pairs(source, eval_share)
    files = {
        "train": sorted({p.path for p in built.train}),
        "eval": sorted({p.path for p in built.eval}),
    }
    return [p.example for p in built.train], [p.example for p in built.eval], files


def write_codesearch(
    out: Path, source: str = "stdlib", eval_share: float = 0.1
) -> dict[str, object]:
    """Build from ``source`` (``stdlib``, packages, folders; comma-separated) and write
    ``out/{train,eval}.jsonl`` with their ``.meta.jsonl`` and ``report.json``."""
    report = write_code_pairs(out, source, eval_share)
    pairs = report["pairs"]
    files = report["files"]
    return {
        "train_pairs": pairs["train"],  # type: ignore[index]
        "eval_pairs": pairs["eval"],  # type: ignore[index]
        "train_files": files["train_with_pairs"],  # type: ignore[index]
        "eval_files": files["eval_with_pairs"],  # type: ignore[index]
        "report": str(Path(out) / "report.json"),
    }

"""Code-search training pairs from any codebase: (a function's doc summary -> its code).

Python, JavaScript, TypeScript, Go, Java and Rust, from the stdlib, installed packages and
repository checkouts, deduplicated and split by file. One module per concern:

- ``sources.py``: what ``--source`` names, and which files of a folder count.
- ``languages.py``: the table of languages (extensions, grammar, function nodes, doc style).
- ``python_source.py`` and ``treesitter.py``: the extractors (``ast``; tree-sitter).
- ``doc_text.py``: a doc comment's summary, without tags and markup.
- ``functions.py``: what an extractor returns, and the rules a function must pass.
- ``split.py``: deduplication and the train/eval split by file.
- ``build.py``: all of it together, and the files written.
"""

from embedding.data.code_pairs.build import (
    CodePair,
    CodePairs,
    NoPairsError,
    build_code_pairs,
    write_code_pairs,
)
from embedding.data.code_pairs.sources import SourceError

__all__ = [
    "CodePair",
    "CodePairs",
    "NoPairsError",
    "SourceError",
    "build_code_pairs",
    "write_code_pairs",
]

"""Training and evaluation examples: their shapes, files and sources.

:mod:`~embedding.data.examples` reads and writes JSONL pairs and triplets;
:mod:`~embedding.data.codesearch` builds (docstring -> code) pairs from the stdlib;
:mod:`~embedding.data.code_pairs` builds them from any codebase in six languages with
honest train/validation splits; :mod:`~embedding.data.corpus` holds the benchmark texts.
Imports ``embedding.models`` and ``embedding.inference`` at most.
"""

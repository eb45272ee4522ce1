"""Honest splits: each function once, and each file on one side.

Deduplication runs over all pairs, before the split, first come first kept (sources in the
order given, files in path order), so whatever survives is unique across both sides:

- ``duplicate_pair``: the same query and code (a file copied into two places).
- ``duplicate_query``: a query already used for other code ("Emit a record." has 11
  handlers in the stdlib): a contradictory label for in-batch negatives, and an eval query
  with two right answers.
- ``duplicate_code``: the same code under another doc.
- ``near_duplicate_code``: code equal to a kept one once comments and layout are ignored,
  or, for code of at least ``SHAPE_MIN_TOKENS`` tokens, once every identifier is too (a
  function copied and renamed). Short functions keep their identifiers: two three-line
  getters share a shape and are still different answers.

The split is by file, by a hash of the file's path relative to its source (the package's
folder, the checkout), so it is the same on every run and machine and no validation file
has a function in training.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TypeVar

SHAPE_MIN_TOKENS = 48

T = TypeVar("T")

_TOKEN = re.compile(r"[A-Za-z_$][\w$]*|\d[\w.]*|\S")
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/|#[^\n!\[]*", re.S)
_KEYWORDS_TEXT = """
    False None True and as assert async await break case catch class const continue def del
    default defer do elif else enum except export extends final finally fn for func go goto
    if impl implements import in instanceof interface is lambda let loop match mod mut new
    nil nonlocal not null or package pass private protected pub public raise range return
    select self static struct super switch this throw throws trait try type typeof var
    void where while with yield true false undefined function
"""
_KEYWORDS = frozenset(_KEYWORDS_TEXT.split())


def file_side(rel: str, eval_share: float) -> str:
    """``"eval"`` or ``"train"``: a stable hash of the file's relative path."""
    bucket = int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if bucket < eval_share else "train"


def fingerprints(code: str) -> tuple[str, str | None]:
    """(layout-insensitive hash, identifier-insensitive hash or None for short code)."""
    tokens = _TOKEN.findall(_COMMENT.sub(" ", code))
    layout = hashlib.blake2b(" ".join(tokens).encode(), digest_size=12).hexdigest()
    if len(tokens) < SHAPE_MIN_TOKENS:
        return layout, None
    shape = " ".join(
        "v" if (t[0].isalpha() or t[0] in "_$") and t not in _KEYWORDS else t for t in tokens
    )
    return layout, hashlib.blake2b(shape.encode(), digest_size=12).hexdigest()


def deduplicate(
    items: Iterable[T], key: Callable[[T], tuple[str, str]]
) -> tuple[list[T], Counter[str]]:
    """The first of each query, code and near-identical code; the rest counted by reason.
    ``key`` gives an item's (query, code)."""
    pairs: set[tuple[str, str]] = set()
    queries: set[str] = set()
    codes: set[str] = set()
    near: set[str] = set()
    kept: list[T] = []
    dropped: Counter[str] = Counter()
    for item in items:
        query, code = key(item)
        if (query, code) in pairs:
            dropped["duplicate_pair"] += 1
            continue
        pairs.add((query, code))
        if query in queries:
            dropped["duplicate_query"] += 1
            continue
        if code in codes:
            dropped["duplicate_code"] += 1
            continue
        prints = [p for p in fingerprints(code) if p]
        if any(p in near for p in prints):
            dropped["near_duplicate_code"] += 1
            continue
        queries.add(query)
        codes.add(code)
        near.update(prints)
        kept.append(item)
    return kept, dropped

"""Training data: pairs, triplets or n-tuples from JSONL, validated before any training starts.

A row is ``{"anchor", "positive", "negative"}`` (a triplet), ``{"anchor", "positive"}``
(a pair; ``query``/``document`` are accepted as names for the two), or ``{"anchor",
"positive", "negatives": [...]}`` (an n-tuple: several hard negatives for one pair, as
sentence-transformers' ``mine_hard_negatives(output_format="n-tuple")`` writes them; MNRL
scores every one of them against every anchor of the batch). Every row of a file has the
same shape. Every problem is a :class:`DataError` naming the line or row, raised before a
model is even loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

Example = tuple[str, ...]  # (anchor, positive), (anchor, positive, negative) or more negatives

# The seed guide's convergence triplets (anchor, positive, negative).
SEED_TRIPLETS: list[Example] = [
    ("def process_data", "def handle_data", "SELECT FROM table"),
    ("async fn fetch", "async fn load", "const config"),
    ("class Worker", "class Handler", "def helper"),
    ("if condition then", "if test do", "console.log"),
    ("@decorator", "@wrapper", "import module"),
]

_ALIASES = {"query": "anchor", "document": "positive", "doc": "positive"}


class DataError(ValueError):
    """Training or evaluation data that cannot be used; the message names where."""


def row_kind(width: int) -> str:
    """What a row of ``width`` texts is called in messages: pair, triplet, or n-tuple."""
    return {2: "pair", 3: "triplet"}.get(width, f"{width - 2}-negative n-tuple")


def mixed_rows(width: int, earlier: int) -> str:
    """The message for a row whose shape differs from the rows before it."""
    if {width, earlier} == {2, 3}:
        return "mixes pairs and triplets"
    return f"mixes {row_kind(width)}s and {row_kind(earlier)}s: every row needs as many texts"


def validate_examples(examples: Sequence[Sequence[object]], where: str = "row") -> list[Example]:
    """All rows of one shape (pairs, triplets or n-tuples), every field a non-empty string;
    at least one row."""
    rows = list(examples)
    if not rows:
        raise DataError("no training rows: the data is empty")
    checked = [check_row(row, f"{where} {i}") for i, row in enumerate(rows)]
    width = len(checked[0])
    for i, row in enumerate(checked):
        if len(row) != width:
            raise DataError(
                f"{where} {i}: {mixed_rows(len(row), width)} "
                f"({len(row)} texts, earlier rows {width})"
            )
    return checked


def field_name(j: int, width: int) -> str:
    """The name of text ``j`` of a row of ``width`` texts, as messages say it."""
    if j < 2 or width == 3:
        return ("anchor", "positive", "negative")[j]
    return f"negative {j - 1}"


def check_row(row: object, label: str) -> Example:
    """One pair, triplet or n-tuple of non-empty strings; the error names ``label`` and the
    field."""
    if isinstance(row, str) or not isinstance(row, Sequence):
        raise DataError(f"{label}: expected a pair or triplet of texts, got {type(row).__name__}")
    if len(row) < 2:
        raise DataError(
            f"{label}: expected 2 or 3 texts (anchor, positive[, negative]) or more "
            f"negatives, got {len(row)}"
        )
    for j, text in enumerate(row):
        name = field_name(j, len(row))
        if not isinstance(text, str):
            raise DataError(f"{label}: {name} is {type(text).__name__}, not a string")
        if not text.strip():
            raise DataError(f"{label}: {name} is empty")
    return tuple(row)  # type: ignore[return-value]


def row_from_json(obj: object, where: str) -> Example:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    fields: dict[str, object] = {}
    for key, value in obj.items():
        name = _ALIASES.get(key, key)
        if name in fields:
            raise DataError(f"{where}: {key!r} and another field both give the {name}")
        fields[name] = value
    unknown = set(fields) - {"anchor", "positive", "negative", "negatives"}
    if unknown:
        raise DataError(f"{where}: unknown field(s) {sorted(unknown)}")
    for name in ("anchor", "positive"):
        if name not in fields:
            raise DataError(f"{where}: missing field {name!r}")
    row = [fields["anchor"], fields["positive"]]
    if "negative" in fields and "negatives" in fields:
        raise DataError(f"{where}: give 'negative' (one) or 'negatives' (a list), not both")
    if "negative" in fields:
        row.append(fields["negative"])
    if "negatives" in fields:
        negatives = fields["negatives"]
        if not isinstance(negatives, list) or not negatives:
            raise DataError(f"{where}: 'negatives' must be a non-empty list of texts")
        row.extend(negatives)
    return tuple(row)  # type: ignore[return-value]


def jsonl_objects(
    path: str | Path, line_name: Callable[[int], str] | None = None
) -> Iterator[tuple[str, object]]:
    """``(where, value)`` for each non-blank line of a JSONL file.

    ``where`` names the line for messages: ``path:line`` by default (a worker's log names
    the file it read); ``line_name`` gives another (an upload is ``line 3``: its server path
    is nobody's business). Every problem of the file itself (missing, not UTF-8, not JSON)
    is a :class:`DataError` naming the line; what the values must be is the caller's to check.
    """
    path = Path(path)
    name = line_name or (lambda number: f"{path}:{number}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{name(number)}: not UTF-8 ({exc.reason} at byte {exc.start})"
                ) from None
            if not line.strip():
                continue
            try:
                yield name(number), json.loads(line)
            except ValueError as exc:
                raise DataError(f"{name(number)}: not JSON ({exc.args[0]})") from None


def first_row_width(path: str | Path) -> int | None:
    """The width of a JSONL file's first row (2 pairs, 3 triplets, more n-tuples) without
    reading the rest; None for a file without rows. A bad first line is a :class:`DataError`."""
    for where, obj in jsonl_objects(path):
        return len(row_from_json(obj, where))
    return None


def load_examples(path: str | Path) -> list[Example]:
    """Triplets or pairs from a JSONL file, validated; errors name the line."""
    path = Path(path)
    rows: list[Example] = []
    for where, obj in jsonl_objects(path):
        row = check_row(row_from_json(obj, where), where)
        if rows and len(row) != len(rows[0]):
            raise DataError(
                f"{where}: a {row_kind(len(row))}, but earlier lines are "
                f"{row_kind(len(rows[0]))}s: {mixed_rows(len(row), len(rows[0]))}"
            )
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return validate_examples(rows, where=f"{path} row")


def load_texts(path: str | Path) -> list[str]:
    """Texts from a JSONL file, one JSON string a line (blank lines skipped); errors name
    the line. A mining corpus, say: code has newlines, so plain lines would not do."""
    path = Path(path)
    texts: list[str] = []
    for where, text in jsonl_objects(path):
        if not isinstance(text, str):
            raise DataError(f"{where}: expected a JSON string, got {type(text).__name__}")
        if not text.strip():
            raise DataError(f"{where}: the text is empty")
        texts.append(text)
    if not texts:
        raise DataError(f"{path}: no texts")
    return texts


def write_examples(path: str | Path, rows: Sequence[Example]) -> None:
    """JSONL that :func:`load_examples` reads back; written whole or not at all (a temporary
    file beside it, renamed into place), so an interrupted run leaves no half file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row_to_json(row)) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def row_to_json(row: Example) -> dict[str, object]:
    """A row as :func:`row_from_json` reads it: ``negative`` for a triplet, ``negatives``
    (a list) for an n-tuple."""
    obj: dict[str, object] = {"anchor": row[0], "positive": row[1]}
    if len(row) == 3:
        obj["negative"] = row[2]
    elif len(row) > 3:
        obj["negatives"] = list(row[2:])
    return obj

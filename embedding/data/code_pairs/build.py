"""Sources in, split pairs and a report out: the one entry point of ``embedding.data.code_pairs``.

The output keeps the format the fine-tune reads (``train.jsonl`` and ``eval.jsonl`` of
``{"anchor", "positive"}`` rows, ``embedding/data/examples.py``), whose readers refuse unknown
fields; so what each pair is (language, source, file, line) goes beside it, in
``train.meta.jsonl`` and ``eval.meta.jsonl``, line for line, and the counts in
``report.json``. The files are written only once every source has been read and some pair
found: a bad source or a codebase without a documented function leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from embedding.data.code_pairs.functions import Extraction
from embedding.data.code_pairs.languages import REPORTED_AS
from embedding.data.code_pairs.python_source import extract_python
from embedding.data.code_pairs.sources import (
    SourceError,
    SourceFile,
    is_generated,
    parse_sources,
    walk,
)
from embedding.data.code_pairs.split import deduplicate, file_side
from embedding.data.code_pairs.treesitter import extract_tree_sitter
from embedding.data.examples import Example, write_examples

DEFAULT_EVAL_SHARE = 0.1


@dataclass(frozen=True)
class CodePair:
    query: str
    code: str
    language: str
    source: str
    path: str  # relative to the source's base (what the split hashed)
    line: int

    @property
    def example(self) -> Example:
        return (self.query, self.code)

    def meta(self) -> dict[str, object]:
        return {
            "language": self.language,
            "source": self.source,
            "path": self.path,
            "line": self.line,
        }


@dataclass
class CodePairs:
    train: list[CodePair]
    eval: list[CodePair]
    report: dict[str, object] = field(default_factory=dict)


class NoPairsError(SourceError):
    """The sources hold no documented function that makes a pair."""


def extract_file(file: SourceFile, data: bytes) -> Extraction:
    if file.language == "python":
        return extract_python(data)
    return extract_tree_sitter(file.language, data)


def build_code_pairs(
    sources: str | Sequence[str],
    eval_share: float = DEFAULT_EVAL_SHARE,
    progress: Callable[[int], None] | None = None,
) -> CodePairs:
    """Pairs from every source, deduplicated, split by file; ``progress`` is called with the
    count of files read so far now and then."""
    if not 0.0 <= eval_share < 1.0:
        raise ValueError(f"eval_share must be in [0, 1), got {eval_share}")
    resolved = parse_sources(sources)
    started = time.perf_counter()
    skipped: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    found: list[CodePair] = []
    files_read = parse_errors = 0
    for source in resolved:
        for file in walk(source, skipped):
            try:
                data = file.path.read_bytes()
            except OSError:
                skipped["unreadable"] += 1
                continue
            if is_generated(data):
                skipped["generated"] += 1
                continue
            files_read += 1
            if progress and files_read % 500 == 0:
                progress(files_read)
            extraction = extract_file(file, data)
            parse_errors += extraction.parse_error
            rejected.update(extraction.rejected)
            language = REPORTED_AS.get(file.language, file.language)
            found.extend(
                CodePair(f.query, f.code, language, file.source, file.rel, f.line)
                for f in extraction.functions
            )
    kept, dropped = deduplicate(found, key=lambda p: (p.query, p.code))
    train = [p for p in kept if file_side(p.path, eval_share) == "train"]
    evaluation = [p for p in kept if file_side(p.path, eval_share) == "eval"]
    seconds = time.perf_counter() - started
    report = _report(resolved, train, evaluation, files_read, parse_errors, skipped, rejected)
    report["dropped"] = dict(sorted(dropped.items()))
    report["seconds"] = round(seconds, 3)
    report["files_per_second"] = round(files_read / seconds, 1) if seconds > 0 else None
    if not kept:
        raise NoPairsError(
            f"no documented function in {', '.join(s.label for s in resolved)} "
            f"({files_read} source files read, {sum(rejected.values())} functions without "
            "a usable doc): nothing to train on, nothing written"
        )
    return CodePairs(train, evaluation, report)


def _report(resolved, train, evaluation, files_read, parse_errors, skipped, rejected) -> dict:
    def by(attribute: str) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for side, pairs in (("train", train), ("eval", evaluation)):
            for pair in pairs:
                row = table.setdefault(getattr(pair, attribute), {"train": 0, "eval": 0})
                row[side] += 1
        return dict(sorted(table.items()))

    return {
        "sources": [{"label": s.label, "kind": s.kind, "root": str(s.root)} for s in resolved],
        "pairs": {"train": len(train), "eval": len(evaluation)},
        "files": {
            "read": files_read,
            "train_with_pairs": len({p.path for p in train}),
            "eval_with_pairs": len({p.path for p in evaluation}),
            "parse_errors": parse_errors,
        },
        "by_language": by("language"),
        "by_source": by("source"),
        "skipped": dict(sorted(skipped.items())),
        "functions_without_pair": dict(sorted(rejected.items())),
    }


def write_code_pairs(
    out: str | Path, sources: str | Sequence[str], eval_share: float = DEFAULT_EVAL_SHARE
) -> dict[str, object]:
    """Build, then write ``train.jsonl``, ``eval.jsonl``, their ``.meta.jsonl`` and
    ``report.json`` into ``out``; returns the report. Nothing is written on an error."""
    built = build_code_pairs(sources, eval_share)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for side, pairs in (("train", built.train), ("eval", built.eval)):
        write_examples(out / f"{side}.jsonl", [p.example for p in pairs])
        _write_jsonl(out / f"{side}.meta.jsonl", [p.meta() for p in pairs])
    _write_jsonl(out / "report.json", [built.report], indent=2)
    return built.report


def _write_jsonl(path: Path, rows: list[dict], indent: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, indent=indent) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

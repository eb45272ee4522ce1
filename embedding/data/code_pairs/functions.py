"""What every language's extractor hands back, and the rules a function must pass to be a pair.

The rules are the CodeSearchNet ones this project always used for Python: a summary of at
least three words (shorter docs, "Getter.", say little a search would type), code of at
least three lines (a one-liner is found by its name), at most 4,000 characters (the model
reads 256 tokens of it anyway), and no private names (``_helper``: not what one searches).
Each function that fails is counted under the rule, so the report says where they went.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MIN_DOC_WORDS = 3
MIN_CODE_LINES = 3
MAX_CODE_CHARS = 4000


@dataclass(frozen=True)
class Function:
    """A documented function: the query (its doc's summary) and the code without the doc."""

    name: str
    query: str
    code: str
    line: int  # 1-based, where the function starts


@dataclass
class Extraction:
    """The pairs of one file, and why each other function of it made none."""

    functions: list[Function] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    parse_error: bool = False


def rejection(name: str, summary: str | None, code: str) -> str | None:
    """Why the function makes no pair (a report key), or None when it makes one."""
    if name.startswith("_"):
        return "private"
    if not summary:
        return "no_doc"
    if len(summary.split()) < MIN_DOC_WORDS:
        return "short_doc"
    if code.count("\n") + 1 < MIN_CODE_LINES:
        return "short_code"
    if len(code) > MAX_CODE_CHARS:
        return "long_code"
    return None


def accept(out: Extraction, name: str, summary: str | None, code: str, line: int) -> None:
    """Add the function to ``out`` or count why not."""
    reason = rejection(name, summary, code)
    if reason:
        out.rejected[reason] += 1
    else:
        out.functions.append(Function(name, summary or "", code, line))

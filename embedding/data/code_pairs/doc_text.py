"""A doc comment's summary: the query of a code-search pair.

A developer searching code types a sentence ("parse a duration string"), not a Javadoc
block: so the query is the doc's first paragraph, with the comment markers (``/**``, ``*``,
``///``, ``//``), the tags (``@param``, ``@returns``, ``:param x:``) and the markup (HTML
tags, ``{@link X}``, markdown backticks, links and emphasis, reST roles) taken out, and its
whitespace collapsed. Keeping them would teach the model that queries look like doc syntax.
"""

from __future__ import annotations

import html
import re

# A line that opens a tag block: everything from it on is parameters and return values.
_TAG_LINE = re.compile(r"^\s*(@\w+|:(param|type|returns?|rtype|raises?|arg|var)\b)")
# Section headings that end a summary in the styles that use them (Rust, Google, numpy).
_SECTION = re.compile(
    r"^\s*(#+\s|(Args|Arguments|Parameters|Returns|Raises|Examples?|Note|Panics|Errors|Safety)"
    r":?\s*$)"
)
_INLINE_TAG = re.compile(r"\{@(?:link|linkplain|code|literal|value)\s+([^}]*)\}")
_INHERIT = re.compile(r"\{@\w+\s*\}")  # {@inheritDoc} and friends: nothing to say
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")  # [text](url)
_MD_REF = re.compile(r"\[([^\]]+)\](\[[^\]]*\])?")  # [`Foo`] (Rust intra-doc links), [text][ref]
_REST_ROLE = re.compile(r":[\w:.-]+:`~?([^`]+)`")  # :class:`Foo` -> Foo
_BACKTICKS = re.compile(r"`+([^`]*)`+")
_EMPHASIS = re.compile(r"(\*\*|__)(\S(?:.*?\S)?)\1")


def strip_comment_markers(comment: str) -> str:
    """The text of a ``/** */``, ``/* */``, ``///``, ``//!`` or ``//`` comment, one line per
    line, without the markers or the leading ``*`` of a block comment's lines."""
    text = comment.strip()
    if text.startswith("/*"):
        text = re.sub(r"^/\*+!?", "", text)
        text = re.sub(r"\*+/$", "", text)
        lines = [re.sub(r"^\s*\*(?!\*)\s?", "", line) for line in text.splitlines()]
    else:
        lines = [re.sub(r"^\s*//[/!]?\s?", "", line) for line in text.splitlines()]
    return "\n".join(lines)


def summarize(doc: str) -> str:
    """The first paragraph of ``doc`` (markers already stripped), without tags or markup."""
    kept: list[str] = []
    for line in doc.strip().splitlines():
        if _TAG_LINE.match(line) or _SECTION.match(line):
            break
        if not line.strip():
            if kept:
                break
            continue
        kept.append(line)
    return clean_markup(" ".join(kept))


def clean_markup(text: str) -> str:
    """Text without inline tags, HTML, markdown or reST markup; whitespace collapsed."""
    text = _INLINE_TAG.sub(r"\1", text)
    text = _INHERIT.sub("", text)
    text = _HTML_TAG.sub(" ", text)
    text = html.unescape(text)
    text = _MD_LINK.sub(r"\1", text)
    text = _REST_ROLE.sub(r"\1", text)
    text = _MD_REF.sub(r"\1", text)
    text = _BACKTICKS.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\2", text)
    return " ".join(text.split())

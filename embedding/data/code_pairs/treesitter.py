"""JavaScript, TypeScript, Go, Java and Rust functions through tree-sitter.

A query finds the function nodes (the C library walks the tree, not Python); for each, the
doc comment is the comment directly above the function, or above what it sits in (``export
function f``, ``const f = () => {}``), with only attributes or decorators between. The code
is the function's own text (the comment lies outside it), dedented. See ``languages.py`` for
which comments count as docs in each language.
"""

from __future__ import annotations

import functools
import textwrap

from embedding.data.code_pairs.doc_text import strip_comment_markers, summarize
from embedding.data.code_pairs.functions import Extraction, accept
from embedding.data.code_pairs.languages import TREE_SITTER, TreeSitterLanguage, grammar

_COMMENTS = ("comment", "line_comment", "block_comment")


@functools.cache
def _parser_and_query(name: str) -> tuple[object, object]:
    from tree_sitter import Parser, Query

    language = grammar(name)
    spec = TREE_SITTER[name]
    query = Query(language, "\n".join(f"({kind}) @function" for kind in spec.functions))
    return Parser(language), query


def extract_tree_sitter(name: str, source: bytes) -> Extraction:
    """The documented functions of ``source`` in language ``name`` (a key of TREE_SITTER)."""
    from tree_sitter import QueryCursor

    spec = TREE_SITTER[name]
    parser, query = _parser_and_query(name)
    tree = parser.parse(source)
    out = Extraction(parse_error=tree.root_node.has_error)
    nodes = QueryCursor(query).captures(tree.root_node).get("function", [])
    for node in sorted(nodes, key=lambda n: n.start_byte):
        if node.child_by_field_name("body") is None:
            continue  # a declaration (abstract, interface, signature): no code to find
        anchor = _anchor(node, spec)
        if _is_rust_test(anchor, spec):
            out.rejected["test"] += 1
            continue
        doc = _doc_comment(anchor, spec)
        summary = summarize(doc) if doc else None
        code = _dedented(source, anchor) if summary else ""
        accept(out, _name(node, anchor), summary, code, anchor.start_point[0] + 1)
    return out


def _anchor(node, spec: TreeSitterLanguage):
    """The outermost node the function is the whole point of: its doc sits above that."""
    anchor = node
    while anchor.parent is not None and anchor.parent.type in spec.wrappers:
        anchor = anchor.parent
    return anchor


def _name(node, anchor) -> str:
    for candidate in (node, anchor):
        found = candidate.child_by_field_name("name")
        if found is not None:
            return found.text.decode("utf-8", "replace")
    declarator = node.parent
    if declarator is not None and declarator.type == "variable_declarator":
        found = declarator.child_by_field_name("name")
        if found is not None:
            return found.text.decode("utf-8", "replace")
    return "<anonymous>"


def _comments_above(anchor, spec: TreeSitterLanguage) -> list:
    """The comments stacked directly above ``anchor`` (nearest last), with no blank line
    between them or below them; attributes and decorators may sit in between."""
    comments: list = []
    top = anchor.start_point[0]
    sibling = anchor.prev_named_sibling
    while sibling is not None and sibling.end_point[0] >= top - 1:
        if sibling.type in _COMMENTS:
            comments.append(sibling)
        elif sibling.type not in spec.between or comments:
            break
        top = sibling.start_point[0]
        sibling = sibling.prev_named_sibling
    comments.reverse()
    return comments


def _doc_comment(anchor, spec: TreeSitterLanguage) -> str | None:
    comments = [c.text.decode("utf-8", "replace") for c in _comments_above(anchor, spec)]
    if not comments:
        return None
    blocks = [c for c in comments if c.startswith("/**") and not c.startswith("/**/")]
    if spec.doc_style == "block" or (blocks and blocks[-1] == comments[-1]):
        # the nearest `/** */` of the run (a `// eslint-disable` may sit below it)
        return strip_comment_markers(blocks[-1]) if blocks else None
    if spec.doc_style == "rust":
        lines = []
        for text in reversed(comments):  # the `///` run nearest the function
            if not (text.startswith("///") and not text.startswith("////")):
                break
            lines.append(text)
        lines.reverse()
        return "\n".join(strip_comment_markers(t).rstrip("\n") for t in lines) or None
    # Go: the run of `//` lines, less compiler directives (`//go:generate`, `//nolint`).
    lines = [
        strip_comment_markers(t)
        for t in comments
        if t.startswith("//") and not t.startswith(("//go:", "//nolint", "//+build"))
    ]
    return "\n".join(lines) or None


def _is_rust_test(anchor, spec: TreeSitterLanguage) -> bool:
    if spec.name != "rust":
        return False
    sibling = anchor.prev_named_sibling
    while sibling is not None and sibling.type in ("attribute_item", *_COMMENTS):
        if sibling.type == "attribute_item" and sibling.text.decode(errors="replace") in (
            "#[test]",
            "#[tokio::test]",
        ):
            return True
        sibling = sibling.prev_named_sibling
    return False


def _dedented(source: bytes, node) -> str:
    """The node's text, dedented by the indentation of its first line."""
    line_start = source.rfind(b"\n", 0, node.start_byte) + 1
    prefix = source[line_start : node.start_byte]
    if prefix.strip():  # code before it on its line: indent as if it stood alone
        prefix = b" " * len(prefix)
    text = (prefix + source[node.start_byte : node.end_byte]).decode("utf-8", "replace")
    return textwrap.dedent(text).strip()

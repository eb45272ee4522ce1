"""The languages pairs are built from: which files, which grammar, which nodes, which docs.

One row per language, so adding one is a row here and a fixture in the tests. Python is
read with the standard library's ``ast`` (as ``embedding/data/codesearch.py`` always did: it
reads the docstring exactly, and unparses the code without it); the others with
tree-sitter and the grammar package PyPI ships for each.

Doc styles:

- ``block``: a ``/** ... */`` comment right above the function (JSDoc, TSDoc, Javadoc).
  A plain ``/* */`` or ``//`` comment is a remark, not documentation, and makes no pair.
- ``line``: ``//`` lines directly above, with no blank line between (Go doc comments).
- ``rust``: ``///`` lines (or a ``/** */`` block) above, attributes allowed in between.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath


@dataclass(frozen=True)
class TreeSitterLanguage:
    name: str
    extensions: tuple[str, ...]
    # module name, function name: the grammar package's language() capsule
    grammar: tuple[str, str]
    # nodes that are functions or methods (those without a body, declarations, are skipped)
    functions: tuple[str, ...]
    doc_style: str
    # nodes a function sits in whose doc comment is the function's: `export function`,
    # `const f = () => {}`, a class field holding an arrow function
    wrappers: tuple[str, ...] = ()
    # siblings allowed between the doc and the function (Rust attributes, TS decorators)
    between: tuple[str, ...] = ()


_JS_FUNCTIONS = (
    "function_declaration",
    "generator_function_declaration",
    "method_definition",
    "function_expression",
    "generator_function",
    "arrow_function",
)
_JS_WRAPPERS = (
    "export_statement",
    "lexical_declaration",
    "variable_declaration",
    "variable_declarator",
    "public_field_definition",
    "field_definition",
    "pair",
)

TREE_SITTER: dict[str, TreeSitterLanguage] = {
    spec.name: spec
    for spec in (
        TreeSitterLanguage(
            "javascript",
            (".js", ".mjs", ".cjs", ".jsx"),
            ("tree_sitter_javascript", "language"),
            _JS_FUNCTIONS,
            "block",
            _JS_WRAPPERS,
            ("decorator",),
        ),
        TreeSitterLanguage(
            "typescript",
            (".ts", ".mts", ".cts"),
            ("tree_sitter_typescript", "language_typescript"),
            _JS_FUNCTIONS,
            "block",
            _JS_WRAPPERS,
            ("decorator",),
        ),
        TreeSitterLanguage(
            "tsx",
            (".tsx",),
            ("tree_sitter_typescript", "language_tsx"),
            _JS_FUNCTIONS,
            "block",
            _JS_WRAPPERS,
            ("decorator",),
        ),
        TreeSitterLanguage(
            "go",
            (".go",),
            ("tree_sitter_go", "language"),
            ("function_declaration", "method_declaration"),
            "line",
        ),
        TreeSitterLanguage(
            "java",
            (".java",),
            ("tree_sitter_java", "language"),
            ("method_declaration", "constructor_declaration"),
            "block",
        ),
        TreeSitterLanguage(
            "rust",
            (".rs",),
            ("tree_sitter_rust", "language"),
            ("function_item",),
            "rust",
            between=("attribute_item",),
        ),
    )
}

# A TSX file is TypeScript to whoever reads the report.
REPORTED_AS = {"tsx": "typescript"}

PYTHON_EXTENSIONS = (".py",)

EXTENSIONS: dict[str, str] = {ext: "python" for ext in PYTHON_EXTENSIONS} | {
    ext: spec.name for spec in TREE_SITTER.values() for ext in spec.extensions
}

LANGUAGES = ("python", "javascript", "typescript", "go", "java", "rust")


def language_of(path: str | PurePath) -> str | None:
    """The parser a file is read with (``tsx`` apart from ``typescript``), or None."""
    name = PurePath(path).name
    if name.endswith(".d.ts"):  # declarations: no bodies, nothing to pair
        return None
    return EXTENSIONS.get(PurePath(path).suffix.lower())


@functools.cache
def grammar(name: str) -> object:
    """The tree-sitter ``Language`` of ``name``, loaded once a process."""
    import importlib

    from tree_sitter import Language

    module, function = TREE_SITTER[name].grammar
    capsule: Callable[[], object] = getattr(importlib.import_module(module), function)
    return Language(capsule())

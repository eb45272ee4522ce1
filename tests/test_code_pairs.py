"""Training pairs from any codebase (``embedding/data/code_pairs/``): each language's extractor,
the file walk's skipping rules, deduplication, the split by file, and refusals.

Every fixture is written here; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedding.data.code_pairs import NoPairsError, SourceError, build_code_pairs, write_code_pairs
from embedding.data.code_pairs.doc_text import strip_comment_markers, summarize
from embedding.data.code_pairs.python_source import extract_python
from embedding.data.code_pairs.split import SHAPE_MIN_TOKENS, file_side, fingerprints
from embedding.data.code_pairs.treesitter import extract_tree_sitter
from embedding.data.examples import load_examples

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ extractors, per language
# Each fixture: one documented function whose doc has tags and markup (the pair), one with
# no comment, one with a plain (non-doc) comment; neither of the last two makes a pair.
FIXTURES = {
    "javascript": (
        "lib.js",
        """\
/**
 * Merge the `defaults` into the {@link Options} object and <b>return</b> it.
 *
 * Longer text that is not part of the summary.
 * @param {Object} options the options
 * @returns {Object} the merged options
 */
export function mergeOptions(options, defaults) {
  const merged = Object.assign({}, defaults);
  return Object.assign(merged, options);
}

function undocumented(a) {
  const b = a * 2;
  return b;
}

// A plain comment is a remark, not documentation.
function remarked(a) {
  const b = a * 3;
  return b;
}
""",
        "Merge the defaults into the Options object and return it.",
        "export function mergeOptions(options, defaults) {",
    ),
    "typescript": (
        "lib.ts",
        """\
class Cache<T> {
  /**
   * Look up the [cached](https://example.org/cache) value for a key.
   * @param key - the key
   * @returns the value, or undefined
   */
  public lookup(key: string): T | undefined {
    const hit = this.items.get(key);
    return hit;
  }

  private items = new Map<string, T>();

  peek(key: string): T | undefined {
    const hit = this.items.get(key);
    return hit;
  }
}
""",
        "Look up the cached value for a key.",
        "public lookup(key: string): T | undefined {",
    ),
    "go": (
        "lib.go",
        """\
package lib

// ParseDuration parses a duration string such as "3h" into seconds.
// It accepts h, m and s units.
//
// Deprecated: use time.ParseDuration.
func ParseDuration(s string) (int, error) {
	n := len(s)
	return n, nil
}

func undocumented(a int) int {
	b := a * 2
	return b
}

// A comment separated by a blank line is no doc comment.

func separated(a int) int {
	b := a * 3
	return b
}
""",
        'ParseDuration parses a duration string such as "3h" into seconds. It accepts h, m and s units.',
        "func ParseDuration(s string) (int, error) {",
    ),
    "java": (
        "Lib.java",
        """\
public class Lib {
    /**
     * Returns the checksum of {@code data} as a <em>hex</em> string.
     *
     * @param data the bytes
     * @return the checksum
     * @throws IllegalStateException never
     */
    @Deprecated
    public static String checksum(byte[] data) {
        int sum = 0;
        for (byte b : data) sum += b;
        return Integer.toHexString(sum);
    }

    /* A plain block comment is no Javadoc. */
    public int plain(int a) {
        int b = a * 2;
        return b;
    }

    public abstract int declared(int a);
}
""",
        "Returns the checksum of data as a hex string.",
        "@Deprecated\npublic static String checksum(byte[] data) {",
    ),
    "rust": (
        "lib.rs",
        """\
/// Splits the [`Path`] into its components, skipping `.` entries.
///
/// # Examples
/// ```
/// let parts = split_path("a/b");
/// ```
#[inline]
pub fn split_path(path: &str) -> Vec<&str> {
    let parts = path.split('/');
    parts.filter(|p| *p != ".").collect()
}

// A plain comment is no doc.
fn plain(a: i32) -> i32 {
    let b = a * 2;
    b
}

/// A test with a doc is still a test, not a search target.
#[test]
fn documented_test() {
    let x = 1;
    assert_eq!(x, 1);
}
""",
        "Splits the Path into its components, skipping . entries.",
        "pub fn split_path(path: &str) -> Vec<&str> {",
    ),
}


# functions per fixture that have a body but no doc comment (Java's `declared` has no body)
NO_DOC = {"javascript": 2, "typescript": 1, "go": 2, "java": 1, "rust": 1}


@pytest.mark.parametrize("language", sorted(FIXTURES))
def test_each_language_pairs_the_doc_summary_with_the_code_without_the_doc(language):
    _, source, summary, head = FIXTURES[language]
    extraction = extract_tree_sitter(language, source.encode())
    assert [f.query for f in extraction.functions] == [summary]
    code = extraction.functions[0].code
    assert code.startswith(head), code
    # the doc, its tags and its markup are nowhere in the code
    for fragment in ("/**", "*/", "///", "@param", "@return", "# Examples", summary):
        assert fragment not in code, (fragment, code)
    # the undocumented and the merely commented functions made no pair
    assert extraction.rejected["no_doc"] == NO_DOC[language]
    assert not extraction.parse_error


def test_rust_test_functions_make_no_pair_even_with_a_doc():
    extraction = extract_tree_sitter("rust", FIXTURES["rust"][1].encode())
    assert extraction.rejected["test"] == 1
    assert "documented_test" not in {f.name for f in extraction.functions}


def test_javascript_arrow_functions_and_methods_take_the_doc_of_their_declaration():
    source = b"""\
/** Compute the area of a circle of radius r. */
export const area = (r) => {
  const squared = r * r;
  return Math.PI * squared;
};

class Shape {
  /** Scale the shape by a factor here. */
  scale(factor) {
    this.size = this.size * factor;
    return this;
  }
}

items.map((x) => {
  const y = x + 1;
  return y;
});
"""
    extraction = extract_tree_sitter("javascript", source)
    assert [(f.name, f.query) for f in extraction.functions] == [
        ("area", "Compute the area of a circle of radius r."),
        ("scale", "Scale the shape by a factor here."),
    ]
    assert extraction.functions[1].code.startswith("scale(factor) {\n  this.size")


def test_python_docstrings_lose_tags_and_markup_and_the_code_loses_the_docstring():
    source = '''
def connect(url, timeout=5):
    """Open a :class:`Connection` to ``url`` and return it.

    :param url: where
    :returns: the connection
    """
    conn = Connection(url)
    conn.open(timeout)
    return conn

async def fetch(url):
    """Fetch the body of a page at an address."""
    response = await get(url)
    body = await response.read()
    return body

def undocumented(a):
    b = a
    return b
'''
    extraction = extract_python(source)
    assert [f.query for f in extraction.functions] == [
        "Open a Connection to url and return it.",
        "Fetch the body of a page at an address.",
    ]
    assert extraction.functions[0].code.startswith("def connect(url, timeout=5):\n    conn =")
    assert '"""' not in extraction.functions[0].code
    assert extraction.functions[1].code.startswith("async def fetch(url):")
    assert extraction.rejected["no_doc"] == 1


@pytest.mark.parametrize(
    ("comment", "summary"),
    [
        ("/**\n * One line.\n * @param x y\n */", "One line."),
        (
            "/** Inline {@link Foo#bar} and {@code baz} {@inheritDoc} here. */",
            "Inline Foo#bar and baz here.",
        ),
        (
            "/// See [`Vec`] and [docs](https://x.y) for **more**.\n/// # Panics",
            "See Vec and docs for more.",
        ),
        ("// Name does a thing &amp; another <br/> thing.", "Name does a thing & another thing."),
    ],
)
def test_summaries_drop_comment_markers_tags_and_markup(comment, summary):
    assert summarize(strip_comment_markers(comment)) == summary


def test_only_tags_is_no_doc():
    extraction = extract_tree_sitter(
        "javascript", b"/** @param {number} a */\nfunction f(a) {\n  const b = a;\n  return b;\n}\n"
    )
    assert not extraction.functions and extraction.rejected["no_doc"] == 1


# ------------------------------------------------------------------ folders: walk, dedupe, split
def function_in(language: str, name: str, words: str) -> str:
    """A documented function in ``language`` named ``name``, whose doc says ``words``."""
    if language == "python":
        return f'def {name}(values):\n    """{words}."""\n    total = 0\n    for v in values:\n        total += v\n    return total\n'
    if language == "go":
        return f"package p\n\n// {name} {words}.\nfunc {name}(values []int) int {{\n\ttotal := 0\n\treturn total\n}}\n"
    return f"/** {words}. */\nfunction {name}(values) {{\n  let total = 0;\n  return total;\n}}\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_checkout_skips_tests_vendored_generated_virtualenvs_gitignored_and_symlinks(tmp_path):
    repo = tmp_path / "repo"
    outside = tmp_path / "outside"
    write(outside / "secret.py", function_in("python", "leaked", "Return the outside total"))
    kept = {
        "src/app.py": "python",
        "src/web/util.js": "javascript",
        "pkg/calc.go": "go",
        "src/keep.gen.js": "javascript",  # re-included by a `!` pattern
    }
    skipped = {
        "tests/test_app.py": "python",
        "src/app_test.py": "python",
        "pkg/calc_test.go": "go",
        "src/web/util.spec.js": "javascript",
        "node_modules/left-pad/index.js": "javascript",
        "vendor/lib/lib.go": "go",
        "third_party/x.py": "python",
        "myenv/lib/site.py": "python",  # a virtualenv: it has a pyvenv.cfg
        "build/out.js": "javascript",
        "src/bundle.min.js": "javascript",
        "src/other.gen.js": "javascript",  # *.gen.js is gitignored
        "cache/data.py": "python",  # cache/ is gitignored
        "src/schema_pb2.py": "python",
        ".hidden/tool.py": "python",
    }
    for i, (rel, language) in enumerate({**kept, **skipped}.items()):
        write(repo / rel, function_in(language, f"Total{i}", f"Add up the values of case {i}"))
    write(repo / "myenv" / "pyvenv.cfg", "home = /usr/bin\n")
    write(repo / ".gitignore", "cache/\n*.gen.js\n!keep.gen.js\n")
    write(
        repo / "src" / "generated_api.py",
        "# Code generated by a tool. DO NOT EDIT.\n" + function_in("python", "gen", "Make it up"),
    )
    (repo / "linked").symlink_to(outside, target_is_directory=True)
    (repo / "src" / "linked.py").symlink_to(outside / "secret.py")
    (repo / "src" / "again.py").symlink_to(repo / "src" / "app.py")

    built = build_code_pairs(str(repo), eval_share=0.0)
    assert sorted(p.path for p in built.train) == sorted(kept)
    assert not built.eval
    assert {p.source for p in built.train} == {str(repo)}
    assert {p.language for p in built.train} == {"python", "javascript", "go"}
    skips = built.report["skipped"]
    assert skips["tests"] == 4 and skips["vendored"] == 3 and skips["virtualenv"] == 1
    assert skips["gitignored"] == 2 and skips["generated"] == 4 and skips["hidden"] == 1
    assert skips["symlink_out"] == 2 and skips["symlink"] == 1


def test_nested_gitignore_files_apply_below_their_folder(tmp_path):
    repo = tmp_path / "repo"
    write(repo / "a" / "one.py", function_in("python", "one", "Add up the values of one"))
    write(repo / "a" / "two.py", function_in("python", "two", "Add up the values of two"))
    write(repo / "b" / "two.py", function_in("python", "three", "Add up the values of three"))
    write(repo / "a" / ".gitignore", "two.py\n")
    built = build_code_pairs(str(repo), eval_share=0.0)
    assert sorted(p.path for p in built.train) == ["a/one.py", "b/two.py"]


def many_files(root: Path, count: int) -> None:
    languages = ("python", "javascript", "go")
    suffix = {"python": "py", "javascript": "js", "go": "go"}
    for i in range(count):
        language = languages[i % 3]
        # distinct bodies too, so no file's function is a near-duplicate of another's
        text = function_in(language, f"Sum{i}", f"Add up the values of batch {i}").replace(
            "total = 0", f"total = {i}"
        )
        write(root / f"m{i // 10}" / f"f{i}.{suffix[language]}", text)


def test_the_split_is_by_file_stable_across_runs_and_leaks_no_file(tmp_path):
    many_files(tmp_path / "repo", 90)
    first = build_code_pairs(str(tmp_path / "repo"), eval_share=0.3)
    second = build_code_pairs(str(tmp_path / "repo"), eval_share=0.3)
    train_files = {p.path for p in first.train}
    eval_files = {p.path for p in first.eval}
    assert train_files and eval_files and not train_files & eval_files
    assert len(train_files | eval_files) == 90
    assert [p.path for p in second.eval] == [p.path for p in first.eval]
    assert not {p.code for p in first.train} & {p.code for p in first.eval}
    for p in first.eval:
        assert file_side(p.path, 0.3) == "eval"
    # the hash is sha256 of the relative path, not Python's salted hash(): pinned values
    assert [file_side(f"m0/f{i}.py", 0.5) for i in range(6)] == [
        file_side(f"m0/f{i}.py", 0.5) for i in range(6)
    ]
    pinned = subprocess.run(
        [
            sys.executable,
            "-c",
            "from embedding.data.code_pairs.split import file_side;"
            "print([file_side(f'm0/f{i}.py', 0.5) for i in range(8)])",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "7"},
    ).stdout.strip()
    assert pinned == str([file_side(f"m0/f{i}.py", 0.5) for i in range(8)])


def test_duplicates_are_dropped_by_reason_and_short_lookalikes_kept(tmp_path):
    repo = tmp_path / "repo"
    body = "\n".join(f"    value_{i} = values[{i}] * weight + offset_{i}" for i in range(6))
    long_fn = 'def {name}(values, weight):\n    """{doc}."""\n' + body + "\n    return values\n"
    write(repo / "a.py", long_fn.format(name="blend", doc="Blend the weighted values together"))
    write(repo / "b.py", long_fn.format(name="blend", doc="Blend the weighted values together"))
    write(repo / "c.py", long_fn.format(name="blend", doc="Mix the weighted values into one"))
    renamed = long_fn.replace("value_", "item_").replace("offset_", "shift_")
    write(repo / "d.py", renamed.format(name="merge", doc="Merge all the weighted values"))
    write(repo / "e.py", function_in("python", "first", "Add up every value given"))
    write(repo / "f.py", function_in("python", "second", "Add up every value given"))
    # two short getters of the same shape: different answers, both kept
    getter = 'def {n}(self):\n    """Return the {n} of the record."""\n    value = self.{n}\n    return value\n'
    write(repo / "g.py", getter.format(n="name") + "\n" + getter.format(n="host"))
    built = build_code_pairs(str(repo), eval_share=0.0)
    assert built.report["dropped"] == {
        "duplicate_pair": 1,  # b.py copies a.py
        "duplicate_code": 1,  # c.py: a.py's code under another doc
        "near_duplicate_code": 1,  # d.py: a.py renamed
        "duplicate_query": 1,  # f.py: e.py's doc over other code
    }
    assert sorted(p.path for p in built.train) == ["a.py", "e.py", "g.py", "g.py"]
    layout, shape = fingerprints("x = 1")
    assert shape is None and layout
    assert SHAPE_MIN_TOKENS > 10


# ------------------------------------------------------------------ sources and refusals
def test_installed_packages_by_import_or_distribution_name_mixed_with_folders(tmp_path):
    write(tmp_path / "repo" / "x.go", function_in("go", "Total", "Total adds up the values"))
    built = build_code_pairs(f"pathspec,PyYAML,{tmp_path / 'repo'}", eval_share=0.5)
    pairs = built.train + built.eval
    by_source = built.report["by_source"]
    assert set(by_source) == {"pathspec", "PyYAML", str(tmp_path / "repo")}
    assert all(p.path.startswith("pathspec/") for p in pairs if p.source == "pathspec")
    assert all(p.path.startswith("yaml/") for p in pairs if p.source == "PyYAML")
    assert sum(by_source["pathspec"].values()) > 5
    assert built.report["by_language"]["go"] == {"train": 1, "eval": 0} or built.report[
        "by_language"
    ]["go"] == {"train": 0, "eval": 1}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("./does-not-exist", "does not exist"),
        ("no_such_package_anywhere", "neither 'stdlib', an installed package, nor a folder"),
        (" , ", "no source given"),
    ],
)
def test_bad_sources_are_refused_with_nothing_written(tmp_path, source, message):
    out = tmp_path / "out"
    with pytest.raises(SourceError, match=message):
        write_code_pairs(out, source)
    assert not out.exists()


def test_a_file_is_not_a_folder_and_a_codebase_without_docs_writes_nothing(tmp_path):
    write(tmp_path / "file.py", "x = 1\n")
    with pytest.raises(SourceError, match="is not a folder"):
        write_code_pairs(tmp_path / "out", str(tmp_path / "file.py"))
    write(tmp_path / "repo" / "a.py", "def f(a):\n    b = a\n    return b\n")
    write(tmp_path / "repo" / "b.js", "// no doc\nfunction g(a) {\n  return a;\n}\n")
    with pytest.raises(NoPairsError, match="no documented function"):
        write_code_pairs(tmp_path / "out", str(tmp_path / "repo"))
    assert not (tmp_path / "out").exists()


def codesearch_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "data", "codesearch", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_the_cli_writes_pairs_the_finetune_reads_and_a_report(tmp_path):
    many_files(tmp_path / "repo", 30)
    out = tmp_path / "out"
    done = codesearch_cli(
        "--source", str(tmp_path / "repo"), "--eval-share", "0.3", "--out", str(out), "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert json.loads(done.stdout) == report  # --json: stdout is report.json, whole
    for side in ("train", "eval"):
        rows = load_examples(out / f"{side}.jsonl")
        meta = [json.loads(line) for line in (out / f"{side}.meta.jsonl").read_text().splitlines()]
        assert len(rows) == len(meta) == report["pairs"][side]
        assert {m["language"] for m in meta} <= {"python", "javascript", "go"}
    assert sum(sum(v.values()) for v in report["by_language"].values()) == 30

    bad = codesearch_cli("--source", str(tmp_path / "missing"), "--out", str(tmp_path / "out2"))
    assert bad.returncode != 0 and "does not exist" in bad.stderr
    assert not (tmp_path / "out2").exists()


def test_the_cli_prints_a_summary_for_a_person(tmp_path):
    """Without --json the terminal gets a few lines (the report is kilobytes of JSON): the
    pairs per language, files read and skipped, the time, and where the files went."""
    many_files(tmp_path / "repo", 30)
    write(tmp_path / "repo" / "tests" / "test_a.py", "def test_a():\n    assert 1\n")
    write(tmp_path / "repo" / ".hidden" / "h.py", "x = 1\n")
    out = tmp_path / "out"
    done = codesearch_cli(
        "--source", str(tmp_path / "repo"), "--eval-share", "0.3", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    text = done.stdout
    assert not text.lstrip().startswith("{") and len(text) < 1500, text
    pairs = report["pairs"]
    assert text.startswith(
        f"{pairs['train'] + pairs['eval']} pairs ({pairs['train']} train, {pairs['eval']} eval)"
        f" from {report['files']['read']} files of {tmp_path / 'repo'} in "
    ), text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line[:2] == "  "}
    for language, counts in report["by_language"].items():
        assert rows[language] == [str(counts["train"]), str(counts["eval"])], text
    assert set(report["by_language"]) == {"python", "javascript", "go"}
    assert report["skipped"] == {"hidden": 1, "tests": 1}
    assert "skipped folders and files: 2 (hidden 1, tests 1)" in text
    assert f"wrote to {out}: train.jsonl and eval.jsonl" in text
    assert "report.json (the whole report; --json prints it)" in text


@pytest.mark.slow
def test_the_projects_own_repository_builds_pairs_without_its_tests_or_virtualenv():
    built = build_code_pairs(str(ROOT), eval_share=0.1)
    paths = {p.path for p in built.train + built.eval}
    assert any(p.startswith("embedding/") for p in paths)
    assert not any(p.startswith(("tests/", ".venv/")) for p in paths)
    assert built.report["pairs"]["train"] > 100

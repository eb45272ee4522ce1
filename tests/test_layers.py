"""The layering rule of docs/architecture.md, and no import cycles anywhere.

`core/` (the settings) imports nothing of ours and no framework; `embedding/` imports neither
Celery, SQLAlchemy, `db`, `workers` nor `api`, and its sub-packages import only those below
them (models, inference, data, evaluation, training, validation); `db/` imports neither
Celery, the ML core, `workers` nor `api`; `workers/` does not import `api`; nothing imports
`api`. Checked two ways:
statically over every import statement (lazy imports inside functions included), and by
importing the core in a fresh interpreter and looking at what got loaded.

A cycle between two of our modules (even through an import inside a function, or one under
``TYPE_CHECKING``) means neither can be read, tested or moved without the other, so the
module graph must be acyclic: :func:`import_graph` walks the imports of every module.
Likewise the public client (`workers.client`) sends messages by task name and reaches the
task definitions through no import, not even a lazy one.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "embedding", "db", "workers", "api")
ML = {
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "peft",
    "numpy",
    "sentence_transformers",
}
FORBIDDEN = {
    "core": {"celery", "kombu", "sqlalchemy", "alembic", "fastapi", "embedding", "db", "workers"}
    | {"api"}
    | ML,
    "embedding": {"celery", "kombu", "sqlalchemy", "alembic", "db", "workers", "api", "fastapi"},
    "db": {"celery", "kombu", "workers", "api", "fastapi", "embedding"} | ML,
    "workers": {"api", "fastapi"},
}
# The ML core's sub-packages, lowest first: each may import only those before it.
EMBEDDING_ORDER = ("models", "inference", "data", "evaluation", "training", "validation")


def imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_higher_layer(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, package
    bad = {
        str(f.relative_to(ROOT)): sorted(imported_top_levels(f) & FORBIDDEN[package]) for f in files
    }
    assert not {k: v for k, v in bad.items() if v}


def embedding_subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "embedding" else None


def test_embedding_subpackages_import_only_lower_ones():
    graph = import_graph()
    assert set(EMBEDDING_ORDER) <= {embedding_subpackage(m) for m in graph}, "the walk sees them"
    upward = []
    for module, targets in graph.items():
        here = embedding_subpackage(module)
        if here is None:
            continue
        for target in targets:
            there = embedding_subpackage(target)
            if there is not None and EMBEDDING_ORDER.index(there) > EMBEDDING_ORDER.index(here):
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_nothing_imports_the_api():
    graph = import_graph()
    assert any(m.startswith("api.") for m in graph), "the walk must see the API"
    callers = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if not m.startswith("api")
        for t in targets
        if t == "api" or t.startswith("api.")
    )
    assert not callers, callers


def test_settings_and_persistence_load_no_ml():
    """The API process and a database migration read settings and the ORM without torch."""
    code = (
        "import json, sys\n"
        "import core.config, db.models, db.session, db.repo, db.migrate\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert {"core", "db", "sqlalchemy"} <= loaded, "the probe must really have imported them"
    assert not loaded & (ML | {"embedding", "workers", "celery"}), sorted(
        loaded & (ML | {"embedding", "workers", "celery"})
    )


def test_importing_the_core_loads_no_celery_or_database():
    code = (
        "import json, sys\n"
        "import embedding.inference.encoder, embedding.training.loop, embedding.validation, embedding.evaluation.bench\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "torch" in loaded, "the probe must really have imported the core"
    assert not loaded & FORBIDDEN["embedding"], sorted(loaded & FORBIDDEN["embedding"])


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Our module -> the modules of ours it imports (at any depth of the file, lazily or not).

    ``from a.b import c`` counts as importing ``a.b``, and ``a.b.c`` too when that is a module;
    importing ``a.b`` also runs ``a/__init__.py``, but a package's ``__init__`` is only an
    edge when it is named, so a package may hold modules that import each other's siblings.
    """
    modules = {
        module_name(f): f
        for package in PACKAGES
        if (ROOT / package).is_dir()
        for f in (ROOT / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_cycle_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_our_modules():
    graph = import_graph()
    assert "workers.tasks" in graph and "embedding.inference.encoder" in graph, (
        "the walk must see our modules"
    )
    assert not find_cycles(graph)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def test_the_client_never_imports_the_tasks():
    from_client = reachable(import_graph(), "workers.client")
    assert {"workers.client", "workers.jobs.outbox", "workers.jobs.validation_run"} <= from_client
    assert "workers.tasks" not in from_client, "the client sends by task name"

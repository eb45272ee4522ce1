"""The layering rule of docs/architecture.md: the core knows nothing of Celery or the database.

`embedding/` imports neither Celery, SQLAlchemy, `db` nor `workers`; `db/` does not import
Celery or `workers`. Checked two ways: statically over every import statement (lazy imports
inside functions included), and by importing the core in a fresh interpreter and looking at
what got loaded. Likewise the public client (`workers.client`) sends messages by task name
and imports the task definitions nowhere, not even lazily.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "embedding": {"celery", "kombu", "sqlalchemy", "alembic", "db", "workers"},
    "db": {"celery", "kombu", "workers"},
}


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


def test_importing_the_core_loads_no_celery_or_database():
    code = (
        "import json, sys\n"
        "import embedding.encoder, embedding.training, embedding.validation, embedding.bench\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "torch" in loaded, "the probe must really have imported the core"
    assert not loaded & FORBIDDEN["embedding"], sorted(loaded & FORBIDDEN["embedding"])


def _module_file(module: str) -> Path | None:
    for path in (
        ROOT / f"{module.replace('.', '/')}.py",
        ROOT / module.replace(".", "/") / "__init__.py",
    ):
        if path.is_file():
            return path
    return None


def project_import_closure(module: str) -> set[str]:
    """Every project module ``module`` can reach through import statements, lazy ones too."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                todo.append(node.module)
                todo += [f"{node.module}.{alias.name}" for alias in node.names]
    return seen


def test_the_client_never_imports_the_tasks():
    reachable = project_import_closure("workers.client")
    assert {"workers.client", "workers.outbox", "workers.validation_run"} <= reachable
    assert "workers.tasks" not in reachable, "the client sends by task name"

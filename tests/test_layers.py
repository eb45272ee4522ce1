"""The layering rule of docs/architecture.md: the core knows nothing of Celery or the database.

`embedding/` imports neither Celery, SQLAlchemy, `db` nor `workers`; `db/` does not import
Celery or `workers`. Checked two ways: statically over every import statement (lazy imports
inside functions included), and by importing the core in a fresh interpreter and looking at
what got loaded.
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
    "embedding": {"celery", "kombu", "sqlalchemy", "alembic", "db", "workers", "api", "fastapi"},
    "db": {"celery", "kombu", "workers", "api", "fastapi"},
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

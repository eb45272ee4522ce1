"""The wall between projects, held by the code's shape: every read of a tenant's rows takes
a scope, and the API never reaches for every project's rows except where an admin key is
recognised. (The routes themselves are tried one by one in tests/test_projects.py.)"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from db import repo
from db.repo.scope import ALL_PROJECTS, Scope

pytest_plugins = ("tests.conftest_db",)

ROOT = Path(__file__).resolve().parent.parent
TENANT_MODULES = ("jobs", "files", "batches", "evaluations", "validations", "versions")
READ_PREFIXES = ("get_", "list_", "latest_", "job_events", "job_of_", "delete_")
# Repo functions the API may call without a scope, each for a stated reason.
UNSCOPED_FOR_API = {
    # Aggregates for /metrics: counts by status, no row and no id leaves the function.
    ("jobs", "count_jobs_by_status"),
    # Writes by id that the route makes only after reading the row in the caller's scope.
    ("jobs", "record_job_request"),
    ("batches", "set_batch_status"),
}


def _tenant_reads() -> list[tuple[str, str, inspect.Signature]]:
    found = []
    for module_name in TENANT_MODULES:
        module = getattr(repo, module_name)
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if func.__module__ == module.__name__ and name.startswith(READ_PREFIXES):
                found.append((module_name, name, inspect.signature(func)))
    return found


def test_there_are_tenant_reads_to_check():
    names = {name for _, name, _ in _tenant_reads()}
    assert {"get_job", "list_files", "get_batch", "get_evaluation", "latest_model_version"} <= names


@pytest.mark.parametrize(("module", "name", "signature"), _tenant_reads(), ids=lambda x: str(x))
def test_every_tenant_read_requires_a_scope(module, name, signature):
    scope = signature.parameters.get("scope")
    assert scope is not None, f"repo.{module}.{name} reads a tenant's rows without a scope"
    assert (
        scope.kind is inspect.Parameter.KEYWORD_ONLY and scope.default is inspect.Parameter.empty
    ), f"repo.{module}.{name}: scope must be a required keyword argument"


@pytest.mark.parametrize(
    "creator",
    [
        repo.jobs.create_job,
        repo.files.add_file,
        repo.batches.create_batch,
        repo.evaluations.create_evaluation,
        repo.validations.create_validation_run,
        repo.versions.register_model_version,
    ],
)
def test_every_tenant_row_is_created_in_a_named_project(creator):
    project = inspect.signature(creator).parameters.get("project_id")
    assert project is not None and project.default is inspect.Parameter.empty, creator.__name__


def _api_sources() -> list[Path]:
    return sorted((ROOT / "api").rglob("*.py"))


def test_the_api_names_every_project_only_where_admin_keys_are_recognised():
    offenders = [
        str(path.relative_to(ROOT))
        for path in _api_sources()
        if "ALL_PROJECTS" in path.read_text() and path.name != "auth.py"
    ]
    assert offenders == []


def test_the_api_calls_no_unscoped_tenant_function():
    """Every ``repo.<entity>.<function>(...)`` call in api/ is to a function that takes a
    scope or creates in a named project, or is one of the few listed with their reason."""
    scoped = {(m, n) for m, n, _ in _tenant_reads()}
    creators = {
        (m, n)
        for m in TENANT_MODULES
        for n, f in inspect.getmembers(getattr(repo, m), inspect.isfunction)
        if "project_id" in inspect.signature(f).parameters
    }
    problems = []
    for path in _api_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            if (
                isinstance(owner, ast.Attribute)
                and isinstance(owner.value, ast.Name)
                and owner.value.id == "repo"
                and owner.attr in TENANT_MODULES
            ):
                call = (owner.attr, node.func.attr)
                if call not in scoped | creators | UNSCOPED_FOR_API:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} repo.{'.'.join(call)}")
    assert problems == [], "unscoped tenant calls from api/: " + ", ".join(problems)


def test_a_scope_sees_its_own_project_only():
    mine, theirs = Scope("proj_a"), Scope("proj_b")

    class Row:
        project_id = "proj_a"

    row = Row()
    assert mine.sees(row) and mine.visible(row) is row
    assert not theirs.sees(row) and theirs.visible(row) is None
    assert ALL_PROJECTS.sees(row) and not ALL_PROJECTS.sees(None)
    with pytest.raises(ValueError):
        repo.scope.project("")


@pytest.mark.parametrize("name", ["", " ", "\x1e", "a\x00b", "\ud800", "x" * 65])
def test_a_name_no_project_or_key_can_have_finds_nothing_instead_of_failing(session, name):
    """What a URL path or a header may carry (schemathesis sent a record separator): the
    lookup answers "no such row", so the route answers 404, never a 500."""
    assert repo.projects.find_project(session, name) is None
    assert repo.keys.get_key(session, name) is None

"""Whose rows a read may see: one project's, or every project's.

Every read of a tenant's rows in ``db/repo`` (jobs, files, batches, evaluations, validation
runs, model versions) takes a :class:`Scope` as a required keyword argument, so a caller
cannot forget the wall: the API passes its caller's scope (a project key: its project; an
admin key: every project, or the one it named), and the workers, which run what was already
admitted, pass :data:`ALL_PROJECTS` by name. ``tests/test_tenancy.py`` holds both rules: every
such read has a required ``scope``, and ``api/`` names ``ALL_PROJECTS`` only where an admin
key is recognised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db.models import DEFAULT_PROJECT_ID


@dataclass(frozen=True)
class Scope:
    """``project_id`` None: every project (operators, workers); else that project only."""

    project_id: str | None

    def filter(self, query: Any, entity: type[Any]) -> Any:
        """``query`` restricted to the rows of ``entity`` this scope may see."""
        if self.project_id is None:
            return query
        return query.where(entity.project_id == self.project_id)

    def sees(self, row: Any) -> bool:
        """Whether a row read by its primary key lies inside this scope."""
        return row is not None and (self.project_id is None or row.project_id == self.project_id)

    def visible(self, row: Any) -> Any:
        """``row`` if this scope sees it, else None (as if there were no such row)."""
        return row if self.sees(row) else None


ALL_PROJECTS = Scope(None)


def project(project_id: str) -> Scope:
    """One project's rows only."""
    if not project_id:
        raise ValueError("a project scope needs a project id")
    return Scope(project_id)


DEFAULT_PROJECT = project(DEFAULT_PROJECT_ID)

"""Quotas checked when work is asked for, before anything is recorded.

A job over the project's running-jobs quota is not refused: it waits its turn
(:mod:`workers.fleet.fair_share` passes its project over). A job over the queued-jobs quota
is refused (:class:`QuotaExceeded`; the API answers 429 with ``Retry-After``): the project
should wait for some of its jobs to run first.
"""

from __future__ import annotations

from db import repo
from db.session import session_scope

# What a refused submit tells the client to wait: about one short job's run.
RETRY_AFTER_S = 30


class QuotaExceeded(RuntimeError):
    """A project's quota refuses the request; ``limit`` names it, ``retry_after_s`` says
    when to try again."""

    def __init__(self, message: str, limit: str, value: int, retry_after_s: int = RETRY_AFTER_S):
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.retry_after_s = retry_after_s


def check_queued_jobs(project_id: str) -> None:
    """Refuse a new job when the project already has ``max_queued_jobs`` waiting."""
    with session_scope() as session:
        project = repo.projects.require_project(session, project_id)
        cap = project.max_queued_jobs
        if cap is None:
            return
        queued = repo.jobs.count_queued(session, project.id)
        name = project.name
    if queued >= cap:
        raise QuotaExceeded(
            f"project {name!r} has {queued} job(s) queued, its quota (max_queued_jobs) is "
            f"{cap}: wait for some to start, or ask an operator to raise it",
            "max_queued_jobs",
            cap,
        )

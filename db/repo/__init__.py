"""The reads and writes the workers and the API need, one module per entity, each safe to
repeat where a retry can repeat it.

``jobs`` (fine-tune jobs, their events and stored requests), ``versions`` (model
versions), ``benchmarks``, ``validations`` (validation runs and checks), ``files`` (the
HTTP API's files), ``batches`` and ``evaluations`` (A/B evaluations); ``projects``,
``keys`` (API keys, hashed) and ``audit`` (who changed what); ``usage`` (what each
project used per day) and ``storage`` (the bytes each project stores); ``rows`` holds what they
share. Callers name the entity: ``repo.jobs.claim_job(session, job_id, ...)``.

Every row of a tenant (jobs, files, batches, evaluations, validation runs, model versions)
belongs to a project: its create function requires ``project_id``, and every read of such
rows requires a ``scope`` (:mod:`db.repo.scope`): one project's, or ``ALL_PROJECTS`` named
outright by the workers and admin keys.

Every function takes the :class:`~sqlalchemy.orm.Session` to work in and never commits:
the caller's ``session_scope()`` decides the transaction. Arguments are validated first
(:mod:`db.values`), so a bad value raises :class:`InvalidValue` before anything is written.

Concurrency is settled by the database, not by reading first and writing after:

* a claim is one conditional ``UPDATE ... WHERE status = 'queued'``; of two workers
  claiming one job, the database lets exactly one UPDATE match;
* idempotency keys, epochs and validation checks are written with
  ``INSERT ... ON CONFLICT`` on their unique constraints (PostgreSQL and SQLite share the
  syntax), so a concurrent or repeated write neither fails nor duplicates, and no
  SAVEPOINT (poorly supported by the SQLite driver) or aborted transaction is involved;
* finishing is a conditional UPDATE too: the first final status wins, a repeat is a no-op.

Job and run ids may be given as UUIDs or strings (task payloads carry strings).
"""

from db.repo import (
    audit,
    batches,
    benchmarks,
    evaluations,
    files,
    jobs,
    keys,
    projects,
    rows,
    scope,
    storage,
    usage,
    validations,
    versions,
)
from db.repo.scope import ALL_PROJECTS, DEFAULT_PROJECT, Scope
from db.values import InvalidValue, NotFound

__all__ = [
    "ALL_PROJECTS",
    "DEFAULT_PROJECT",
    "InvalidValue",
    "NotFound",
    "Scope",
    "audit",
    "batches",
    "benchmarks",
    "evaluations",
    "files",
    "jobs",
    "keys",
    "projects",
    "rows",
    "scope",
    "storage",
    "usage",
    "validations",
    "versions",
]

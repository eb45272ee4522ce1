"""The fine-tune outbox: a job is recorded before its message is sent, and nothing is lost
between the two.

:func:`submit_request` commits the job row first (``sent_at`` empty), then takes it out of
the outbox and sends the ``embedding.finetune`` message (:func:`send`: one sender only). If
the broker is down the job goes back to the outbox and :func:`relay_unsent` (``embedctl jobs
relay``, or the beat task ``embedding.relay_outbox``) sends it once the broker is back. The same idempotency key with
the same request always gives the same job (a job already sent is not sent again); with
another request it is an :class:`~workers.jobs.idempotency.IdempotencyConflict`.

Messages are sent by task name, so this module (and the client that uses it) never
imports the task definitions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from db import repo
from db.session import session_scope
from workers.fleet.dispatch import dispatch
from workers.fleet.quotas import check_queued_jobs
from workers.jobs.idempotency import check_same_request, request_digest
from workers.jobs.messages import publish, send
from workers.jobs.submit_checks import check_request
from workers.schemas import FinetuneRequest
from workers.tenancy import project_id_of

log = logging.getLogger(__name__)
__all__ = ["Submitted", "publish", "relay_unsent", "send", "submit_request"]


@dataclass(frozen=True)
class Submitted:
    """The job a request gave, and its status now (a repeated request may find it finished)."""

    job_id: str
    status: str


def submit_request(
    request: FinetuneRequest, request_sha256: str | None = None, actor: str | None = None
) -> Submitted:
    """Check a validated request, record it in the outbox, then try to send it.

    Refused before anything is recorded: an unknown or archived project, a model or dataset
    the workers may not use (:func:`workers.jobs.submit_checks.check_request`), and a key
    already used with another request or by another project
    (:class:`~workers.jobs.idempotency.IdempotencyConflict`; ``request_sha256`` is the
    caller's digest of what it was asked, by default the payload's). ``actor``: the API key
    id that asked, for the job's ``created`` event.
    """
    project_id = project_id_of(request.project)
    row_width = check_request(request)
    check_queued_jobs(project_id)
    digest = request_sha256 or request_digest(
        request.model_dump(mode="json", exclude={"idempotency_key"}, exclude_none=True)
    )
    # The digest is of what was asked; the job records what it will train with.
    params = request.with_recipe(row_width).model_dump(
        exclude={"model", "idempotency_key", "project"}, exclude_none=True
    )
    with session_scope() as session:
        job = repo.jobs.create_job(
            session,
            request.model,
            params,
            idempotency_key=request.idempotency_key,
            request_sha256=digest,
            project_id=project_id,
            actor=actor,
        )
        check_same_request(request.idempotency_key, job, digest, project_id)
        job_id, status, already_sent = str(job.id), job.status, job.sent_at is not None
    if not already_sent:
        dispatch()  # sent now if the fleet has a free slot and it is this job's turn
    return Submitted(job_id, status)


def relay_unsent() -> int:
    """Send what the outbox holds and the fleet has room for, in fair-share order (a
    dispatcher pass); returns how many were sent."""
    return dispatch()

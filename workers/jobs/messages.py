"""A fine-tune job's message: taken out of the outbox, then put on the gpu queue, once.

The low layer under the outbox (:mod:`workers.jobs.outbox`: submit) and the fair-share
dispatcher (:mod:`workers.fleet.dispatch`: who goes next): both send through :func:`send`.
"""

from __future__ import annotations

import logging

from db import repo
from db.session import session_scope

log = logging.getLogger(__name__)


def send(job_id: str) -> bool:
    """Take one job out of the outbox and send its message; False if another sender has it
    or the broker is away (then the job is back in the outbox, for the relay).

    Exactly one of the job's senders (its submitter, relay passes) sends it: the job is
    taken out of the outbox first (:func:`db.repo.jobs.take_from_outbox`), then sent. The
    Celery task id is the job id, and the worker's database claim keeps a job from running
    twice whatever is delivered; this keeps a duplicate from being delivered at all.
    """
    with session_scope() as session:
        if not repo.jobs.take_from_outbox(session, job_id):
            return False
    if not publish(job_id):
        with session_scope() as session:
            repo.jobs.return_to_outbox(session, job_id)
        return False
    with session_scope() as session:
        repo.jobs.add_job_event(session, job_id, "sent", "sent to the gpu queue")
    return True


def publish(job_id: str) -> bool:
    """Put the job's message on the gpu queue, whatever the outbox says (a re-send); False,
    logged, if the broker refused it."""
    from workers.app import publisher  # made on first use, with the settings of that moment

    try:
        publisher().send_task("embedding.finetune", args=[job_id], task_id=job_id, queue="gpu")
    except Exception as exc:
        log.warning("job %s: message not sent, broker unavailable (%s)", job_id, type(exc).__name__)
        return False
    return True

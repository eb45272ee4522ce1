"""Fine-tune jobs: create, claim, heartbeat, epochs, finish, cancel, rescue, events, and
the stored request a job was submitted with."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, update
from sqlalchemy.orm import Session, selectinload

from db import values as v
from db.models import (
    JOB_EVENT_KINDS,
    JOB_FINAL_STATUSES,
    JOB_STATUSES,
    EpochMetric,
    FinetuneJob,
    FinetuneJobRequest,
    JobEvent,
    UTCDateTime,
    utcnow,
)
from db.repo.rows import ACTIVE, Id, bulk_update, dialect_insert, forget, page, require
from db.repo.scope import Scope
from db.repo.usage import add as add_usage
from db.values import InvalidValue, NotFound


def create_job(
    session: Session,
    model: str,
    params: dict[str, Any],
    idempotency_key: str | None = None,
    request_sha256: str | None = None,
    *,
    project_id: str,
    actor: str | None = None,
) -> FinetuneJob:
    """Insert a ``queued`` job of ``project_id``; with a key already used, return that job
    instead (the caller checks it is of the same project and request).

    Two concurrent submissions with one key get one job. The job keeps ``request_sha256``
    (the digest of the request that made it) so the caller can tell a repeat of the same
    request from another request under the same key (``workers/jobs/idempotency.py``).
    ``actor``, the key id that asked (never the key), goes into the ``created`` event.
    """
    model = v.text(model, "model", max_len=500)
    params = v.json_object(params, "params", strict=True)
    key = v.optional_text(idempotency_key, "idempotency_key", max_len=200)
    digest = v.optional_text(request_sha256, "request_sha256", max_len=64)
    project_id = v.text(project_id, "project_id", max_len=40)
    who = None if actor is None else {"actor": v.text(actor, "actor", max_len=40)}
    if key is None:
        job = FinetuneJob(model=model, params=params, request_sha256=digest, project_id=project_id)
        session.add(job)
        session.flush()
        add_job_event(session, job.id, "created", f"created ({model})", data=who)
        return job
    stmt = (
        dialect_insert(session, FinetuneJob)
        .values(
            id=uuid.uuid4(),
            idempotency_key=key,
            request_sha256=digest,
            model=model,
            params=params,
            project_id=project_id,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(FinetuneJob.id)
    )
    inserted = session.execute(stmt).scalar_one_or_none()
    if inserted is not None:
        add_job_event(session, inserted, "created", f"created ({model}, key {key})", data=who)
    query = select(FinetuneJob).where(FinetuneJob.idempotency_key == key)
    return session.scalars(query.execution_options(populate_existing=True)).one()


def claim_job(
    session: Session,
    job_id: Id,
    hostname: str,
    allow_reclaim_running: bool = False,
    stale_after_s: float | None = None,
) -> bool:
    """Mark a queued job ``running`` for ``hostname``; True only for the one claimant that won.

    With ``stale_after_s``, a ``running`` job is only taken over when its lease
    (``heartbeat_at``, see :func:`heartbeat`) is older than that: a worker that is alive
    keeps its job, a dead one's job is resumed by the next delivery.

    ``allow_reclaim_running`` also takes over a ``running`` job: only for a message the
    broker redelivered after its worker died (the job's checkpoints let it resume).
    ``started_at`` keeps the first attempt's start; ``attempts`` counts every claim.

    The UPDATE is conditional on the status *and* on the attempts count read just before
    (compare-and-swap): of concurrent claimants exactly one matches, even when they all
    may reclaim a running job. A finished job is never claimed.
    """
    jid = v.as_uuid(job_id, "job_id")
    hostname = v.text(hostname, "hostname", max_len=255)
    claimable = ACTIVE if allow_reclaim_running else ("queued",)
    seen = session.execute(
        select(
            FinetuneJob.status, FinetuneJob.attempts, FinetuneJob.heartbeat_at, FinetuneJob.worker
        ).where(FinetuneJob.id == jid)
    ).one_or_none()
    if seen is None:
        raise NotFound(f"no fine-tune job {jid}")
    if seen.status not in claimable:
        return False
    now = utcnow()
    alive = (
        seen.status == "running"
        and stale_after_s is not None
        and seen.heartbeat_at is not None
        and (now - seen.heartbeat_at).total_seconds() < stale_after_s
    )
    if alive:
        return False  # its worker holds a live lease: leave the job alone
    if seen.status == "running":
        charge_attempt(session, jid, lost=True)  # the lost attempt, up to its last lease
    stmt = (
        update(FinetuneJob)
        .where(
            FinetuneJob.id == jid,
            FinetuneJob.status.in_(claimable),
            FinetuneJob.attempts == seen.attempts,
        )
        .values(
            status="running",
            attempts=FinetuneJob.attempts + 1,
            started_at=func.coalesce(FinetuneJob.started_at, literal(now, UTCDateTime())),
            heartbeat_at=now,
            claimed_at=now,
            worker=hostname,
        )
    )
    won = bulk_update(session, stmt) == 1
    forget(session, FinetuneJob, jid)
    if won and seen.status == "running":
        add_job_event(session, jid, "retried", *_retry_reason(seen, now))
    if won:
        add_job_event(
            session,
            jid,
            "claimed",
            f"claimed by {hostname} (attempt {seen.attempts + 1})",
            worker=hostname,
            data={"attempt": seen.attempts + 1, "taken_over": seen.status == "running"},
        )
    return won


def _retry_reason(seen: Any, now: datetime) -> tuple[str, str | None, dict[str, Any]]:
    """Why a running job is claimed again: its worker was lost (the message came back after
    a kill, a crash or a rescue), said with the lease's age; message, worker and data of
    the ``retried`` event."""
    lease = None if seen.heartbeat_at is None else (now - seen.heartbeat_at).total_seconds()
    said = "no lease" if lease is None else f"its lease last renewed {lease:.1f} s ago"
    message = f"attempt {seen.attempts + 1}: worker {seen.worker} was lost ({said})"
    return (
        message,
        None,
        {"attempt": seen.attempts + 1, "lost_worker": seen.worker, "lease_age_s": lease},
    )


def charge_attempt(session: Session, job_id: Id, lost: bool = False) -> float:
    """Add the job's current attempt to its project's training GPU-seconds, once: from its
    claim to now, or for a ``lost`` attempt (its worker is gone) to its last lease; returns
    the seconds charged. The claim time is cleared by the same compare-and-set, so of two
    callers (a finish and a takeover) one charges."""
    jid = v.as_uuid(job_id, "job_id")
    row = session.execute(
        select(FinetuneJob.project_id, FinetuneJob.claimed_at, FinetuneJob.heartbeat_at).where(
            FinetuneJob.id == jid
        )
    ).one_or_none()
    if row is None or row.claimed_at is None:
        return 0.0
    end = (row.heartbeat_at or row.claimed_at) if lost else utcnow()
    cleared = bulk_update(
        session,
        update(FinetuneJob)
        .where(FinetuneJob.id == jid, FinetuneJob.claimed_at == row.claimed_at)
        .values(claimed_at=None),
    )
    forget(session, FinetuneJob, jid)
    seconds = max(0.0, (end - row.claimed_at).total_seconds())
    if cleared == 1 and seconds > 0:
        add_usage(session, row.project_id, gpu_seconds_training=seconds)
        return seconds
    return 0.0


def heartbeat(session: Session, job_id: Id) -> bool:
    """Refresh a running job's lease; False when the job is no longer running."""
    jid = v.as_uuid(job_id, "job_id")
    stmt = (
        update(FinetuneJob)
        .where(FinetuneJob.id == jid, FinetuneJob.status == "running")
        .values(heartbeat_at=utcnow())
    )
    updated = bulk_update(session, stmt) == 1
    forget(session, FinetuneJob, jid)
    return updated


def record_epoch(
    session: Session,
    job_id: Id,
    epoch: int,
    train_loss: float,
    lr: float | None,
    duration_s: float | None,
    samples_per_s: float | None,
    eval: dict[str, Any] | None = None,
) -> EpochMetric:
    """Upsert one epoch's figures: writing epoch k again replaces its row (a resumed job)."""
    jid = v.as_uuid(job_id, "job_id")
    row = {
        "epoch": v.integer(epoch, "epoch", minimum=0),
        "train_loss": v.number(train_loss, "train_loss"),
        "lr": v.optional_number(lr, "lr", minimum=0.0),
        "duration_s": v.optional_number(duration_s, "duration_s", minimum=0.0),
        "samples_per_s": v.optional_number(samples_per_s, "samples_per_s", minimum=0.0),
        "eval": None if eval is None else v.json_object(eval, "eval", strict=False),
    }
    require(session, FinetuneJob, jid, "fine-tune job")
    existed = session.scalar(
        select(EpochMetric.id).where(EpochMetric.job_id == jid, EpochMetric.epoch == row["epoch"])
    )
    if existed is None:  # a resumed job replays its finished epochs: one event each, ever
        add_job_event(
            session,
            jid,
            "epoch",
            f"epoch {row['epoch']} finished, loss {row['train_loss']:.6f}",
            data={"epoch": row["epoch"], "train_loss": row["train_loss"], "lr": row["lr"]},
        )
    stmt = dialect_insert(session, EpochMetric).values(job_id=jid, **row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "epoch"],
        set_={name: stmt.excluded[name] for name in row if name != "epoch"},
    )
    session.execute(stmt)
    forget(session, FinetuneJob, jid, "epochs")
    query = select(EpochMetric).where(EpochMetric.job_id == jid, EpochMetric.epoch == row["epoch"])
    return session.scalars(query.execution_options(populate_existing=True)).one()


def finish_job(
    session: Session,
    job_id: Id,
    status: str,
    error: str | None = None,
    model_version_id: int | None = None,
    lost: bool = False,
) -> bool:
    """Set a final status (succeeded / failed / cancelled); True if this call set it.

    A job already final stays as it is (the first outcome wins), so a repeated or late
    call after a redelivery is harmless. The attempt's GPU time is charged to its project
    (:func:`charge_attempt`; ``lost``: its worker is gone, charged to its last lease).
    """
    jid = v.as_uuid(job_id, "job_id")
    v.choice(status, JOB_STATUSES, "job status")
    status = v.choice(status, JOB_FINAL_STATUSES, "final job status")
    if error is not None and not isinstance(error, str):
        raise InvalidValue(f"error must be a string, got {type(error).__name__}")
    version = None if model_version_id is None else v.integer(model_version_id, "model_version_id")
    stmt = (
        update(FinetuneJob)
        .where(FinetuneJob.id == jid, FinetuneJob.status.in_(ACTIVE))
        .values(status=status, error=error, finished_at=utcnow(), model_version_id=version)
    )
    changed = bulk_update(session, stmt) == 1
    forget(session, FinetuneJob, jid)
    if not changed:
        require(session, FinetuneJob, jid, "fine-tune job")
    else:
        charge_attempt(session, jid, lost=lost)
        add_job_event(session, jid, status, f"{status}: {error}" if error else status)
    return changed


def record_job_result(
    session: Session, job_id: Id, result: dict[str, Any], event: str | None = None
) -> bool:
    """Store what training concluded (``finetune_jobs.result``) on a job still running, and
    ``event``, when given, as its ``best_epoch`` step; True if this call stored it.

    Once only: a job that already has a result, or has ended, keeps what it has (a
    redelivered job that trains again writes nothing twice). Call it in the transaction
    that registers the version and finishes the job.
    """
    jid = v.as_uuid(job_id, "job_id")
    data = v.json_object(result, "result", strict=False)
    stmt = (
        update(FinetuneJob)
        .where(
            FinetuneJob.id == jid,
            FinetuneJob.status.in_(ACTIVE),
            FinetuneJob.result.is_(None),
        )
        .values(result=data)
    )
    changed = bulk_update(session, stmt) == 1
    forget(session, FinetuneJob, jid)
    if not changed:
        require(session, FinetuneJob, jid, "fine-tune job")
    elif event is not None:
        add_job_event(session, jid, "best_epoch", event, data=data)
    return changed


def take_from_outbox(session: Session, job_id: Id) -> bool:
    """Claim a job's first send: True for one caller only, whoever asks first (its submitter
    or a relay pass). ``sent_at`` is set *before* the message goes, so a relay pass that read
    the job as unsent a moment ago finds it taken; with the mark after the send, a send that
    took longer than the relay's grace went out twice. A sender whose message then fails puts
    the job back (:func:`return_to_outbox`); one that dies in between leaves a queued job with
    no message, which the rescue pass re-sends. The first send time is kept."""
    jid = v.as_uuid(job_id, "job_id")
    stmt = (
        update(FinetuneJob)
        .where(FinetuneJob.id == jid, FinetuneJob.sent_at.is_(None))
        .values(sent_at=utcnow())
    )
    changed = bulk_update(session, stmt) == 1
    forget(session, FinetuneJob, jid)
    if not changed:
        require(session, FinetuneJob, jid, "fine-tune job")
    return changed


def return_to_outbox(session: Session, job_id: Id, lost: bool = False) -> bool:
    """Put a still-queued job back in the outbox: its message could not be sent. ``lost``:
    a job whose message or worker is gone (the lifeline's rescue), queued or running, goes
    back too, to wait its turn in the fair-share order again."""
    jid = v.as_uuid(job_id, "job_id")
    statuses = ACTIVE if lost else ("queued",)
    stmt = (
        update(FinetuneJob)
        .where(FinetuneJob.id == jid, FinetuneJob.status.in_(statuses))
        .values(sent_at=None)
    )
    changed = bulk_update(session, stmt) == 1
    forget(session, FinetuneJob, jid)
    return changed


def unsent_jobs(session: Session, older_than_s: float = 0, limit: int = 1000) -> list[FinetuneJob]:
    """Queued jobs still in the outbox, created at least ``older_than_s`` ago, oldest first.

    ``older_than_s`` lets the relay skip jobs whose submitter is probably sending them
    right now.
    """
    age = v.number(older_than_s, "older_than_s", minimum=0.0)
    limit = v.integer(limit, "limit", minimum=1)
    cutoff = utcnow() - timedelta(seconds=age)
    query = (
        select(FinetuneJob)
        .where(
            FinetuneJob.sent_at.is_(None),
            FinetuneJob.status == "queued",
            FinetuneJob.cancel_requested.is_(False),
            FinetuneJob.created_at <= cutoff,
        )
        .order_by(FinetuneJob.created_at, FinetuneJob.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def jobs_to_rescue(
    session: Session, sent_before: Any, lease_expired_before: Any, limit: int = 500
) -> list[FinetuneJob]:
    """Jobs that may have lost their message: ``queued`` and sent before ``sent_before``,
    or ``running`` with a lease older than ``lease_expired_before``; oldest first."""
    query = (
        select(FinetuneJob)
        .where(
            ((FinetuneJob.status == "queued") & (FinetuneJob.sent_at <= sent_before))
            | (
                (FinetuneJob.status == "running")
                & FinetuneJob.sent_at.is_not(None)  # back in the outbox: the dispatcher's
                & (
                    FinetuneJob.heartbeat_at.is_(None)
                    | (FinetuneJob.heartbeat_at <= lease_expired_before)
                )
            )
        )
        .order_by(FinetuneJob.created_at, FinetuneJob.id)
        .limit(v.integer(limit, "limit", minimum=1))
    )
    return list(session.scalars(query))


def mark_rescued(session: Session, job_id: Id, reason: str) -> bool:
    """A job lost its message or its worker: back in the outbox (the fair-share dispatcher
    sends it again in its turn) with a ``rescued`` event; False if it had ended meanwhile."""
    jid = v.as_uuid(job_id, "job_id")
    if not return_to_outbox(session, jid, lost=True):
        return False
    add_job_event(session, jid, "rescued", f"back in the queue: {reason}")
    return True


def fleet_state(session: Session) -> dict[str, Any]:
    """What the fair-share dispatcher decides on, read in one transaction:

    * ``waiting``: jobs to send, ``(job id, project id)`` oldest first: in the outbox and
      not cancelled (queued, or running with its worker lost and rescued);
    * ``in_flight``: project id -> jobs sent and not ended (a message out, or running);
    * ``running_s``: project id -> seconds its running attempts have run so far;
    * ``devices``: waiting job id -> its ``n_devices`` param (None: unset, one device);
    * ``in_flight_devices``: the ``n_devices`` param of each job in flight (gpu slots it holds).
    """
    now = utcnow()
    n_devices = FinetuneJob.params["n_devices"]  # read alone: params may hold inline rows
    waiting = session.execute(
        select(FinetuneJob.id, FinetuneJob.project_id, n_devices)
        .where(
            FinetuneJob.sent_at.is_(None),
            FinetuneJob.status.in_(ACTIVE),
            FinetuneJob.cancel_requested.is_(False),
        )
        .order_by(FinetuneJob.created_at, FinetuneJob.id)
    ).all()
    in_flight_jobs = session.execute(
        select(FinetuneJob.project_id, n_devices).where(
            FinetuneJob.sent_at.is_not(None), FinetuneJob.status.in_(ACTIVE)
        )
    ).all()
    in_flight: dict[str, int] = {}
    for project_id, _ in in_flight_jobs:
        in_flight[project_id] = in_flight.get(project_id, 0) + 1
    running_s: dict[str, float] = {}
    for project_id, claimed in session.execute(
        select(FinetuneJob.project_id, FinetuneJob.claimed_at).where(
            FinetuneJob.status == "running", FinetuneJob.claimed_at.is_not(None)
        )
    ):
        running_s[project_id] = running_s.get(project_id, 0.0) + max(
            0.0, (now - claimed).total_seconds()
        )
    return {
        "waiting": [(str(job_id), project_id) for job_id, project_id, _ in waiting],
        "in_flight": in_flight,
        "running_s": running_s,
        "devices": {str(job_id): devices for job_id, _, devices in waiting},
        "in_flight_devices": [devices for _, devices in in_flight_jobs],
    }


def count_queued(session: Session, project_id: str) -> int:
    """A project's jobs waiting to run (queued, sent or not): what its queued quota counts."""
    query = (
        select(func.count())
        .select_from(FinetuneJob)
        .where(
            FinetuneJob.project_id == v.text(project_id, "project_id", max_len=40),
            FinetuneJob.status == "queued",
        )
    )
    return int(session.scalar(query) or 0)


def release_job(session: Session, job_id: Id, hostname: str, reason: str) -> bool:
    """Give a running job back (warm shutdown): ``queued`` again, lease cleared, so the next
    delivery claims it at once instead of waiting for the lease to run out."""
    jid = v.as_uuid(job_id, "job_id")
    stmt = (
        update(FinetuneJob)
        .where(
            FinetuneJob.id == jid,
            FinetuneJob.status == "running",
            FinetuneJob.worker == hostname,
        )
        .values(status="queued", heartbeat_at=None)
    )
    charge_attempt(session, jid)  # before the lease is gone: the attempt ends now
    changed = bulk_update(session, stmt) == 1
    forget(session, FinetuneJob, jid)
    if changed:
        add_job_event(
            session, jid, "released", f"released by {hostname}: {reason}", worker=hostname
        )
    return changed


def request_cancel(session: Session, job_id: Id, actor: str | None = None) -> bool:
    """Flag a job to stop; True if it was still queued or running (a finished one is left).
    ``actor``: the key id that asked, kept in the ``cancel_requested`` event."""
    jid = v.as_uuid(job_id, "job_id")
    stmt = (
        update(FinetuneJob)
        .where(FinetuneJob.id == jid, FinetuneJob.status.in_(ACTIVE))
        .values(cancel_requested=True)
    )
    changed = bulk_update(session, stmt) == 1
    forget(session, FinetuneJob, jid)
    if not changed:
        require(session, FinetuneJob, jid, "fine-tune job")
    else:
        who = None if actor is None else {"actor": v.text(actor, "actor", max_len=40)}
        add_job_event(session, jid, "cancel_requested", "cancel requested", data=who)
    return changed


def is_cancel_requested(session: Session, job_id: Id) -> bool:
    """The cancel flag, read fresh (a running job polls it between batches)."""
    jid = v.as_uuid(job_id, "job_id")
    flag = session.scalar(select(FinetuneJob.cancel_requested).where(FinetuneJob.id == jid))
    if flag is None:
        raise NotFound(f"no fine-tune job {jid}")
    return bool(flag)


def add_job_event(
    session: Session,
    job_id: Id,
    kind: str,
    message: str,
    worker: str | None = None,
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Append one step to a job's timeline, in the caller's transaction."""
    event = JobEvent(
        job_id=v.as_uuid(job_id, "job_id"),
        kind=v.choice(kind, JOB_EVENT_KINDS, "job event kind"),
        message=v.text(message, "message")[:4000],
        worker=v.optional_text(worker, "worker", max_len=255),
        data=None if data is None else v.json_object(data, "data", strict=False),
        at=utcnow(),
    )
    session.add(event)
    session.flush()
    return event


def job_events(session: Session, job_id: Id, *, scope: Scope) -> list[JobEvent]:
    """A job's timeline, oldest first (empty for a job outside ``scope``)."""
    jid = v.as_uuid(job_id, "job_id")
    query = select(JobEvent).join(FinetuneJob, FinetuneJob.id == JobEvent.job_id)
    query = scope.filter(query.where(JobEvent.job_id == jid), FinetuneJob)
    return list(session.scalars(query.order_by(JobEvent.id)))


def get_job(session: Session, job_id: Id, *, scope: Scope) -> FinetuneJob | None:
    """The job with its epochs (in order), read fresh; None if there is none in ``scope``."""
    jid = v.as_uuid(job_id, "job_id")
    query = (
        select(FinetuneJob)
        .where(FinetuneJob.id == jid)
        .options(selectinload(FinetuneJob.epochs))
        .execution_options(populate_existing=True)
    )
    return session.scalars(scope.filter(query, FinetuneJob)).one_or_none()


def list_jobs(
    session: Session, status: str | None = None, limit: int = 50, *, scope: Scope
) -> list[FinetuneJob]:
    """The newest jobs first (with their epochs), optionally only those in ``status``."""
    limit = v.integer(limit, "limit", minimum=1)
    query = scope.filter(select(FinetuneJob).options(selectinload(FinetuneJob.epochs)), FinetuneJob)
    if status is not None:
        query = query.where(FinetuneJob.status == v.choice(status, JOB_STATUSES, "job status"))
    query = query.order_by(FinetuneJob.created_at.desc(), FinetuneJob.id).limit(limit)
    return list(session.scalars(query))


def list_jobs_page(
    session: Session, after: Id | None = None, limit: int = 20, *, scope: Scope
) -> list[FinetuneJob]:
    """Jobs newest first, with their epochs; ``after`` a job id (cursor paging)."""
    cursor = None if after is None else v.as_uuid(after, "after")
    jobs = page(session, FinetuneJob, cursor, limit, project_id=scope.project_id)
    if jobs:  # load the epochs of the page in one query
        session.scalars(
            select(FinetuneJob)
            .where(FinetuneJob.id.in_([j.id for j in jobs]))
            .options(selectinload(FinetuneJob.epochs))
        ).all()
    return jobs


def count_jobs_by_status(session: Session) -> dict[str, int]:
    """Every job status with its count (zero included), for the metrics page."""
    counts = dict.fromkeys(JOB_STATUSES, 0)
    query = select(FinetuneJob.status, func.count()).group_by(FinetuneJob.status)
    counts.update({status: n for status, n in session.execute(query)})
    return counts


def record_job_request(
    session: Session,
    job_id: Id,
    training_file: str,
    validation_file: str | None = None,
) -> FinetuneJobRequest:
    """Attach an API request's file ids to its job; the first one recorded for a job stays."""
    jid = v.as_uuid(job_id, "job_id")
    row = {
        "training_file": v.text(training_file, "training_file", max_len=64),
        "validation_file": v.optional_text(validation_file, "validation_file", max_len=64),
    }
    require(session, FinetuneJob, jid, "fine-tune job")
    stmt = dialect_insert(session, FinetuneJobRequest).values(
        job_id=jid, created_at=utcnow(), **row
    )
    session.execute(stmt.on_conflict_do_nothing())
    query = select(FinetuneJobRequest).where(FinetuneJobRequest.job_id == jid)
    return session.scalars(query.execution_options(populate_existing=True)).one()


def get_job_request(session: Session, job_id: Id, *, scope: Scope) -> FinetuneJobRequest | None:
    jid = v.as_uuid(job_id, "job_id")
    query = select(FinetuneJobRequest).join(
        FinetuneJob, FinetuneJob.id == FinetuneJobRequest.job_id
    )
    return session.scalars(
        scope.filter(query.where(FinetuneJobRequest.job_id == jid), FinetuneJob)
    ).first()

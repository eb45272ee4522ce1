"""The few reads and writes the workers need, each safe to repeat where a retry can repeat it.

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

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from db import values as v
from db.models import (
    BATCH_STATUSES,
    CHECK_STATUSES,
    EVALUATION_STATUSES,
    EVALUATION_TRIGGERS,
    EVALUATION_VERDICTS,
    FILE_PURPOSES,
    JOB_EVENT_KINDS,
    JOB_FINAL_STATUSES,
    JOB_STATUSES,
    RUN_FINAL_STATUSES,
    RUN_STATUSES,
    RUN_TRIGGERS,
    Batch,
    BatchChunk,
    BenchmarkResult,
    EpochMetric,
    Evaluation,
    FinetuneJob,
    FinetuneJobRequest,
    JobEvent,
    ModelVersion,
    StoredFile,
    UTCDateTime,
    ValidationCheck,
    ValidationRun,
    utcnow,
)
from db.values import InvalidValue, NotFound

__all__ = [
    "InvalidValue",
    "NotFound",
    "add_benchmark_result",
    "add_file",
    "add_job_event",
    "beat_evaluation",
    "beat_validation_run",
    "benchmark_history",
    "claim_job",
    "count_jobs_by_status",
    "create_batch",
    "create_evaluation",
    "create_job",
    "create_validation_run",
    "delete_file",
    "delete_model_version",
    "fail_evaluation",
    "fail_lost_evaluation",
    "finish_evaluation",
    "finish_job",
    "finish_validation_run",
    "get_batch",
    "get_evaluation",
    "get_file",
    "get_job",
    "get_job_request",
    "get_model_version",
    "get_validation_run",
    "is_cancel_requested",
    "job_events",
    "job_of_version",
    "jobs_to_rescue",
    "latest_model_version",
    "latest_validation_run",
    "list_batches",
    "list_evaluations",
    "list_files",
    "list_jobs",
    "list_jobs_page",
    "list_model_versions",
    "list_validation_runs",
    "lost_evaluations",
    "mark_rescued",
    "mark_sent",
    "record_batch_chunk",
    "record_epoch",
    "record_job_request",
    "record_validation_check",
    "register_model_version",
    "release_job",
    "request_cancel",
    "requeue_lost_evaluation",
    "set_batch_status",
    "stale_validation_runs",
    "start_evaluation",
    "unsent_jobs",
]

_ACTIVE = ("queued", "running")
Id = uuid.UUID | str


def _insert(session: Session, entity: type[Any]) -> Any:
    """The dialect's INSERT (the one with ``on_conflict_do_*``) for the session's backend."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(entity)
    if name == "sqlite":
        return sqlite.insert(entity)
    raise NotImplementedError(f"db/repo.py supports PostgreSQL and SQLite, not {name}")


def _update(session: Session, stmt: Any) -> int:
    """Run a bulk UPDATE; returns the rows matched. Callers expire what it changed."""
    return session.execute(stmt, execution_options={"synchronize_session": False}).rowcount


def _forget(session: Session, entity: type[Any], ident: Any, *attrs: str) -> None:
    """Expire a cached object after a statement changed its row behind the ORM's back."""
    obj = session.identity_map.get(session.identity_key(entity, ident))
    if obj is not None:
        session.expire(obj, list(attrs) or None)


def _require(session: Session, entity: type[Any], ident: Any, what: str) -> None:
    if session.get(entity, ident) is None:
        raise NotFound(f"no {what} {ident}")


# ------------------------------------------------------------------ fine-tune jobs
def create_job(
    session: Session,
    model: str,
    params: dict[str, Any],
    idempotency_key: str | None = None,
    request_sha256: str | None = None,
) -> FinetuneJob:
    """Insert a ``queued`` job; with a key already used, return that job instead.

    Two concurrent submissions with one key get one job. The job keeps ``request_sha256``
    (the digest of the request that made it) so the caller can tell a repeat of the same
    request from another request under the same key (``workers/jobs/idempotency.py``).
    """
    model = v.text(model, "model", max_len=500)
    params = v.json_object(params, "params", strict=True)
    key = v.optional_text(idempotency_key, "idempotency_key", max_len=200)
    digest = v.optional_text(request_sha256, "request_sha256", max_len=64)
    if key is None:
        job = FinetuneJob(model=model, params=params, request_sha256=digest)
        session.add(job)
        session.flush()
        add_job_event(session, job.id, "created", f"created ({model})")
        return job
    stmt = (
        _insert(session, FinetuneJob)
        .values(
            id=uuid.uuid4(),
            idempotency_key=key,
            request_sha256=digest,
            model=model,
            params=params,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(FinetuneJob.id)
    )
    inserted = session.execute(stmt).scalar_one_or_none()
    if inserted is not None:
        add_job_event(session, inserted, "created", f"created ({model}, key {key})")
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
    claimable = _ACTIVE if allow_reclaim_running else ("queued",)
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
            worker=hostname,
        )
    )
    won = _update(session, stmt) == 1
    _forget(session, FinetuneJob, jid)
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


def heartbeat(session: Session, job_id: Id) -> bool:
    """Refresh a running job's lease; False when the job is no longer running."""
    jid = v.as_uuid(job_id, "job_id")
    stmt = (
        update(FinetuneJob)
        .where(FinetuneJob.id == jid, FinetuneJob.status == "running")
        .values(heartbeat_at=utcnow())
    )
    updated = _update(session, stmt) == 1
    _forget(session, FinetuneJob, jid)
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
    _require(session, FinetuneJob, jid, "fine-tune job")
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
    stmt = _insert(session, EpochMetric).values(job_id=jid, **row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "epoch"],
        set_={name: stmt.excluded[name] for name in row if name != "epoch"},
    )
    session.execute(stmt)
    _forget(session, FinetuneJob, jid, "epochs")
    query = select(EpochMetric).where(EpochMetric.job_id == jid, EpochMetric.epoch == row["epoch"])
    return session.scalars(query.execution_options(populate_existing=True)).one()


def finish_job(
    session: Session,
    job_id: Id,
    status: str,
    error: str | None = None,
    model_version_id: int | None = None,
) -> bool:
    """Set a final status (succeeded / failed / cancelled); True if this call set it.

    A job already final stays as it is (the first outcome wins), so a repeated or late
    call after a redelivery is harmless.
    """
    jid = v.as_uuid(job_id, "job_id")
    v.choice(status, JOB_STATUSES, "job status")
    status = v.choice(status, JOB_FINAL_STATUSES, "final job status")
    if error is not None and not isinstance(error, str):
        raise InvalidValue(f"error must be a string, got {type(error).__name__}")
    version = None if model_version_id is None else v.integer(model_version_id, "model_version_id")
    stmt = (
        update(FinetuneJob)
        .where(FinetuneJob.id == jid, FinetuneJob.status.in_(_ACTIVE))
        .values(status=status, error=error, finished_at=utcnow(), model_version_id=version)
    )
    changed = _update(session, stmt) == 1
    _forget(session, FinetuneJob, jid)
    if not changed:
        _require(session, FinetuneJob, jid, "fine-tune job")
    else:
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
            FinetuneJob.status.in_(_ACTIVE),
            FinetuneJob.result.is_(None),
        )
        .values(result=data)
    )
    changed = _update(session, stmt) == 1
    _forget(session, FinetuneJob, jid)
    if not changed:
        _require(session, FinetuneJob, jid, "fine-tune job")
    elif event is not None:
        add_job_event(session, jid, "best_epoch", event, data=data)
    return changed


def mark_sent(session: Session, job_id: Id) -> bool:
    """Take a job out of the outbox; the first send time is kept. True if it was unsent."""
    jid = v.as_uuid(job_id, "job_id")
    stmt = (
        update(FinetuneJob)
        .where(FinetuneJob.id == jid, FinetuneJob.sent_at.is_(None))
        .values(sent_at=utcnow())
    )
    changed = _update(session, stmt) == 1
    _forget(session, FinetuneJob, jid)
    if not changed:
        _require(session, FinetuneJob, jid, "fine-tune job")
    else:
        add_job_event(session, jid, "sent", "sent to the gpu queue")
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


def mark_rescued(session: Session, job_id: Id, reason: str) -> None:
    """Record a re-send: ``sent_at`` moves to now (the rescue's own clock) and an event."""
    jid = v.as_uuid(job_id, "job_id")
    _update(session, update(FinetuneJob).where(FinetuneJob.id == jid).values(sent_at=utcnow()))
    _forget(session, FinetuneJob, jid)
    add_job_event(session, jid, "rescued", f"re-sent: {reason}")


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
    changed = _update(session, stmt) == 1
    _forget(session, FinetuneJob, jid)
    if changed:
        add_job_event(
            session, jid, "released", f"released by {hostname}: {reason}", worker=hostname
        )
    return changed


def request_cancel(session: Session, job_id: Id) -> bool:
    """Flag a job to stop; True if it was still queued or running (a finished one is left)."""
    jid = v.as_uuid(job_id, "job_id")
    stmt = (
        update(FinetuneJob)
        .where(FinetuneJob.id == jid, FinetuneJob.status.in_(_ACTIVE))
        .values(cancel_requested=True)
    )
    changed = _update(session, stmt) == 1
    _forget(session, FinetuneJob, jid)
    if not changed:
        _require(session, FinetuneJob, jid, "fine-tune job")
    else:
        add_job_event(session, jid, "cancel_requested", "cancel requested")
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


def job_events(session: Session, job_id: Id) -> list[JobEvent]:
    """A job's timeline, oldest first."""
    jid = v.as_uuid(job_id, "job_id")
    return list(
        session.scalars(select(JobEvent).where(JobEvent.job_id == jid).order_by(JobEvent.id))
    )


def get_job(session: Session, job_id: Id) -> FinetuneJob | None:
    """The job with its epochs (in order), read fresh; None if there is none."""
    jid = v.as_uuid(job_id, "job_id")
    query = (
        select(FinetuneJob)
        .where(FinetuneJob.id == jid)
        .options(selectinload(FinetuneJob.epochs))
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).one_or_none()


def list_jobs(session: Session, status: str | None = None, limit: int = 50) -> list[FinetuneJob]:
    """The newest jobs first (with their epochs), optionally only those in ``status``."""
    limit = v.integer(limit, "limit", minimum=1)
    query = select(FinetuneJob).options(selectinload(FinetuneJob.epochs))
    if status is not None:
        query = query.where(FinetuneJob.status == v.choice(status, JOB_STATUSES, "job status"))
    query = query.order_by(FinetuneJob.created_at.desc(), FinetuneJob.id).limit(limit)
    return list(session.scalars(query))


# ------------------------------------------------------------------ model versions
def register_model_version(
    session: Session,
    name: str,
    base_model: str,
    path: str | os.PathLike[str],
    weights_sha256: str,
    metrics: dict[str, Any] | None,
) -> ModelVersion:
    """Register a saved model as the next version of ``name`` (1, 2, ...).

    Registering the same weights at the same path again (a retried task) returns the
    existing version. Concurrent registrations of one name get distinct numbers: the
    unique (name, version) decides, and the loser takes the next number.
    """
    name = v.text(name, "name", max_len=500)
    base_model = v.text(base_model, "base_model", max_len=500)
    path = v.text(os.fspath(path) if isinstance(path, os.PathLike) else path, "path")
    digest = v.text(weights_sha256, "weights_sha256").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidValue(f"weights_sha256 must be 64 hex digits, got {weights_sha256!r}")
    metrics = {} if metrics is None else v.json_object(metrics, "metrics", strict=False)

    same = select(ModelVersion).where(
        ModelVersion.name == name,
        ModelVersion.path == path,
        ModelVersion.weights_sha256 == digest,
    )
    existing = session.scalars(same.order_by(ModelVersion.version).limit(1)).first()
    if existing is not None:
        return existing
    for _ in range(100):
        latest = select(func.max(ModelVersion.version)).where(ModelVersion.name == name)
        version = (session.scalar(latest) or 0) + 1
        stmt = (
            _insert(session, ModelVersion)
            .values(
                name=name,
                version=version,
                base_model=base_model,
                path=path,
                weights_sha256=digest,
                metrics=metrics,
            )
            .on_conflict_do_nothing(index_elements=["name", "version"])
            .returning(ModelVersion.id)
        )
        new_id = session.execute(stmt).scalar()
        if new_id is not None:
            return session.get_one(ModelVersion, new_id)
    raise RuntimeError(f"could not allocate a version number for model {name!r}")


# ------------------------------------------------------------------ benchmarks
_BENCH_TEXT = {"model": 500, "device": 64, "precision": 32, "package_version": 64, "host": 255}
_BENCH_REQUIRED_FLOATS = (
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "latency_min_ms",
    "latency_max_ms",
    "throughput_per_s",
)
_BENCH_OPTIONAL_FLOATS = ("grad_step_ms", "optimizer_step_ms", "peak_memory_mb")


def add_benchmark_result(session: Session, **figures: Any) -> BenchmarkResult:
    """Store one benchmark measurement (every figure a finite, non-negative number)."""
    known = {*_BENCH_TEXT, *_BENCH_REQUIRED_FLOATS, *_BENCH_OPTIONAL_FLOATS, "batch_size"}
    unknown = sorted(set(figures) - known)
    if unknown:
        raise InvalidValue(f"unknown benchmark figures {unknown}; known: {sorted(known)}")
    missing = sorted(known - set(figures) - set(_BENCH_OPTIONAL_FLOATS))
    if missing:
        raise InvalidValue(f"missing benchmark figures {missing}")
    row: dict[str, Any] = {k: v.text(figures[k], k, n) for k, n in _BENCH_TEXT.items()}
    row["batch_size"] = v.integer(figures["batch_size"], "batch_size", minimum=1)
    for k in _BENCH_REQUIRED_FLOATS:
        row[k] = v.number(figures[k], k, minimum=0.0)
    for k in _BENCH_OPTIONAL_FLOATS:
        row[k] = v.optional_number(figures.get(k), k, minimum=0.0)
    result = BenchmarkResult(**row)
    session.add(result)
    session.flush()
    return result


def benchmark_history(
    session: Session, model: str | None = None, limit: int = 50
) -> list[BenchmarkResult]:
    """The newest measurements first, optionally for one model."""
    limit = v.integer(limit, "limit", minimum=1)
    query = select(BenchmarkResult)
    if model is not None:
        query = query.where(BenchmarkResult.model == v.text(model, "model"))
    query = query.order_by(BenchmarkResult.created_at.desc(), BenchmarkResult.id.desc())
    return list(session.scalars(query.limit(limit)))


# ------------------------------------------------------------------ validation runs
def create_validation_run(
    session: Session, trigger: str, models: Sequence[str] | Iterable[str]
) -> ValidationRun:
    """Start a validation run (status ``running``) for ``models``."""
    trigger = v.choice(trigger, RUN_TRIGGERS, "trigger")
    if isinstance(models, str):
        raise InvalidValue(f"models must be a list of names, got the string {models!r}")
    names = [v.text(m, "model name", max_len=500) for m in models]
    run = ValidationRun(trigger=trigger, models=names)
    session.add(run)
    session.flush()
    return run


def record_validation_check(
    session: Session,
    run_id: Id,
    name: str,
    status: str,
    figures: dict[str, Any] | None,
    criteria: Sequence[dict[str, Any]] | None,
    duration_s: float | None,
) -> ValidationCheck:
    """Upsert one check's result in a run: a retried check replaces its row."""
    rid = v.as_uuid(run_id, "run_id")
    row = {
        "name": v.text(name, "check name", max_len=100),
        "status": v.choice(status, CHECK_STATUSES, "check status"),
        "figures": {} if figures is None else v.json_object(figures, "figures", strict=False),
        "criteria": _criteria(criteria),
        "duration_s": v.optional_number(duration_s, "duration_s", minimum=0.0),
    }
    _require(session, ValidationRun, rid, "validation run")
    stmt = _insert(session, ValidationCheck).values(run_id=rid, created_at=utcnow(), **row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "name"],
        set_={k: stmt.excluded[k] for k in ("status", "figures", "criteria", "duration_s")},
    )
    session.execute(stmt)
    _forget(session, ValidationRun, rid, "checks")
    query = select(ValidationCheck).where(
        ValidationCheck.run_id == rid, ValidationCheck.name == row["name"]
    )
    return session.scalars(query.execution_options(populate_existing=True)).one()


def _criteria(criteria: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A list of ``{name, threshold, actual, passed}``: name a string, passed a bool."""
    if criteria is None:
        return []
    if not isinstance(criteria, list | tuple):
        raise InvalidValue(f"criteria must be a list, got {type(criteria).__name__}")
    out = []
    for i, item in enumerate(criteria):
        entry = v.json_object(item, f"criteria[{i}]", strict=False)
        v.text(entry.get("name"), f"criteria[{i}].name")
        if not isinstance(entry.get("passed"), bool):
            raise InvalidValue(f"criteria[{i}].passed must be true or false")
        out.append(entry)
    return out


def finish_validation_run(
    session: Session,
    run_id: Id,
    status: str,
    verdict: str,
    error: str | None = None,
) -> bool:
    """Set the run's final status and verdict; True if this call set it (first one wins)."""
    rid = v.as_uuid(run_id, "run_id")
    v.choice(status, RUN_STATUSES, "run status")
    status = v.choice(status, RUN_FINAL_STATUSES, "final run status")
    verdict = v.text(verdict, "verdict")
    if error is not None and not isinstance(error, str):
        raise InvalidValue(f"error must be a string, got {type(error).__name__}")
    stmt = (
        update(ValidationRun)
        .where(ValidationRun.id == rid, ValidationRun.status == "running")
        .values(status=status, verdict=verdict, error=error, finished_at=utcnow())
    )
    changed = _update(session, stmt) == 1
    _forget(session, ValidationRun, rid)
    if not changed:
        _require(session, ValidationRun, rid, "validation run")
    return changed


def get_validation_run(session: Session, run_id: Id) -> ValidationRun | None:
    """The run with its checks (by name), read fresh; None if there is none."""
    rid = v.as_uuid(run_id, "run_id")
    query = (
        select(ValidationRun)
        .where(ValidationRun.id == rid)
        .options(selectinload(ValidationRun.checks))
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).one_or_none()


def latest_validation_run(session: Session) -> ValidationRun | None:
    """The most recently started run with its checks, or None."""
    query = (
        select(ValidationRun)
        .options(selectinload(ValidationRun.checks))
        .order_by(ValidationRun.started_at.desc(), ValidationRun.id)
        .limit(1)
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).first()


# ------------------------------------------------------------------ the HTTP API's records
def add_file(
    session: Session, file_id: str, purpose: str, filename: str, size: int, rows: int, path: str
) -> StoredFile:
    """Record a stored file (its bytes are already on disk at ``path``)."""
    row = StoredFile(
        id=v.text(file_id, "file id", max_len=64),
        purpose=v.choice(purpose, FILE_PURPOSES, "file purpose"),
        filename=v.text(filename, "filename", max_len=500),
        bytes=v.integer(size, "bytes", minimum=0),
        rows=v.integer(rows, "rows", minimum=0),
        path=v.text(path, "path"),
    )
    session.add(row)
    session.flush()
    return row


def get_file(session: Session, file_id: str) -> StoredFile | None:
    return session.get(StoredFile, file_id)


def list_files(
    session: Session, purpose: str | None = None, after: str | None = None, limit: int = 100
) -> list[StoredFile]:
    """Newest first; ``after`` a file id: the files older than it (cursor paging)."""
    return _page(session, StoredFile, after, limit, purpose=purpose)


def delete_file(session: Session, file_id: str) -> bool:
    row = session.get(StoredFile, file_id)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def _page(session: Session, entity: type[Any], after: Any, limit: int, **equal: Any) -> list[Any]:
    """Rows newest first by (created_at, id); ``after`` an id: only rows after it in that order.

    Keyset paging: a page never repeats or skips a row when rows are added meanwhile.
    """
    limit = v.integer(limit, "limit", minimum=1)
    query = select(entity)
    for column, value in equal.items():
        if value is not None:
            query = query.where(getattr(entity, column) == value)
    if after is not None:
        cursor = session.get(entity, after)
        if cursor is None:
            raise NotFound(f"no {entity.__tablename__} row {after}")
        query = query.where(
            (entity.created_at < cursor.created_at)
            | ((entity.created_at == cursor.created_at) & (entity.id < cursor.id))
        )
    query = query.order_by(entity.created_at.desc(), entity.id.desc()).limit(limit)
    return list(session.scalars(query))


def list_jobs_page(session: Session, after: Id | None = None, limit: int = 20) -> list[FinetuneJob]:
    """Jobs newest first, with their epochs; ``after`` a job id (cursor paging)."""
    cursor = None if after is None else v.as_uuid(after, "after")
    jobs = _page(session, FinetuneJob, cursor, limit)
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
    _require(session, FinetuneJob, jid, "fine-tune job")
    stmt = _insert(session, FinetuneJobRequest).values(job_id=jid, created_at=utcnow(), **row)
    session.execute(stmt.on_conflict_do_nothing())
    query = select(FinetuneJobRequest).where(FinetuneJobRequest.job_id == jid)
    return session.scalars(query.execution_options(populate_existing=True)).one()


def get_job_request(session: Session, job_id: Id) -> FinetuneJobRequest | None:
    return session.get(FinetuneJobRequest, v.as_uuid(job_id, "job_id"))


def latest_model_version(
    session: Session, name: str, version: int | None = None
) -> ModelVersion | None:
    """Version ``version`` of ``name``, or its highest version when none is given."""
    query = select(ModelVersion).where(ModelVersion.name == v.text(name, "name", max_len=500))
    if version is not None:
        query = query.where(ModelVersion.version == v.integer(version, "version", minimum=1))
    return session.scalars(query.order_by(ModelVersion.version.desc()).limit(1)).first()


def job_of_version(session: Session, version_id: int) -> FinetuneJob | None:
    """The job that registered a version (None for versions registered otherwise)."""
    query = select(FinetuneJob).where(
        FinetuneJob.model_version_id == v.integer(version_id, "model_version_id")
    )
    return session.scalars(query.limit(1)).first()


def list_model_versions(session: Session, limit: int = 500) -> list[ModelVersion]:
    query = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
    return list(session.scalars(query.limit(v.integer(limit, "limit", minimum=1))))


def get_model_version(session: Session, version_id: int) -> ModelVersion | None:
    return session.get(ModelVersion, v.integer(version_id, "model_version_id"))


def delete_model_version(session: Session, version_id: int) -> bool:
    """Forget a registered version (its job keeps its history, with no version)."""
    row = session.get(ModelVersion, v.integer(version_id, "model_version_id"))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def create_batch(
    session: Session,
    batch_id: str,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    chunks: Sequence[Sequence[int]],
    models: dict[str, str],
    total: int,
    expires_at: Any,
    metadata: dict[str, Any] | None = None,
) -> Batch:
    """Record a validated batch, ``in_progress`` (its chunk tasks are sent right after)."""
    row = Batch(
        id=v.text(batch_id, "batch id", max_len=64),
        input_file_id=v.text(input_file_id, "input_file_id", max_len=64),
        endpoint=v.text(endpoint, "endpoint", max_len=100),
        completion_window=v.text(completion_window, "completion_window", max_len=16),
        status="in_progress",
        chunks=[[v.integer(a, "chunk start"), v.integer(b, "chunk end")] for a, b in chunks],
        models=v.json_object(models, "models", strict=True),
        total=v.integer(total, "total", minimum=0),
        metadata_=None if metadata is None else v.json_object(metadata, "metadata", strict=True),
        in_progress_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row


def get_batch(session: Session, batch_id: str) -> Batch | None:
    """The batch with its finished chunks, read fresh."""
    query = (
        select(Batch)
        .where(Batch.id == batch_id)
        .options(selectinload(Batch.done_chunks))
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).one_or_none()


def list_batches(session: Session, after: str | None = None, limit: int = 20) -> list[Batch]:
    batches = _page(session, Batch, after, limit)
    for batch in batches:
        session.refresh(batch, ["done_chunks"])
    return batches


_BATCH_STAMPS = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}


def set_batch_status(
    session: Session, batch_id: str, status: str, from_statuses: Sequence[str], **fields: Any
) -> bool:
    """Move a batch to ``status`` only from one of ``from_statuses`` (compare-and-set), stamping
    its time; True if this call moved it. ``fields``: output/error file ids, errors."""
    status = v.choice(status, BATCH_STATUSES, "batch status")
    allowed = {"output_file_id", "error_file_id", "errors"}
    if set(fields) - allowed:
        raise InvalidValue(f"unknown batch fields {sorted(set(fields) - allowed)}")
    values: dict[str, Any] = {"status": status, **fields}
    if status in _BATCH_STAMPS:
        values[_BATCH_STAMPS[status]] = utcnow()
    stmt = (
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(list(from_statuses)))
        .values(**values)
    )
    changed = _update(session, stmt) == 1
    _forget(session, Batch, batch_id)
    if not changed:
        _require(session, Batch, batch_id, "batch")
    return changed


def record_batch_chunk(
    session: Session, batch_id: str, chunk: int, completed: int, failed: int
) -> int:
    """Count one finished chunk (a repeat of the same chunk counts once); returns how many
    of the batch's chunks are done."""
    row = {
        "chunk": v.integer(chunk, "chunk", minimum=0),
        "completed": v.integer(completed, "completed", minimum=0),
        "failed": v.integer(failed, "failed", minimum=0),
    }
    _require(session, Batch, batch_id, "batch")
    stmt = _insert(session, BatchChunk).values(batch_id=batch_id, created_at=utcnow(), **row)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["batch_id", "chunk"]))
    _forget(session, Batch, batch_id, "done_chunks")
    done = select(func.count()).select_from(BatchChunk).where(BatchChunk.batch_id == batch_id)
    return int(session.scalar(done) or 0)


def beat_validation_run(session: Session, run_id: Id) -> bool:
    """Refresh a running validation run's lease (a check of it is running); False once the
    run has ended."""
    rid = v.as_uuid(run_id, "run_id")
    stmt = (
        update(ValidationRun)
        .where(ValidationRun.id == rid, ValidationRun.status == "running")
        .values(heartbeat_at=utcnow())
    )
    moved = _update(session, stmt) == 1
    _forget(session, ValidationRun, rid)
    return moved


def stale_validation_runs(
    session: Session, started_before: datetime, lease_expired_before: datetime
) -> list[str]:
    """``running`` runs started before ``started_before`` whose lease (a check running) is
    older than ``lease_expired_before`` or was never taken: candidates for the lifeline,
    which still looks for their messages in the queues."""
    query = select(ValidationRun.id).where(
        ValidationRun.status == "running",
        ValidationRun.started_at < started_before,
        (ValidationRun.heartbeat_at.is_(None))
        | (ValidationRun.heartbeat_at < lease_expired_before),
    )
    return [str(rid) for rid in session.scalars(query)]


def list_validation_runs(session: Session, limit: int = 20) -> list[ValidationRun]:
    """The newest runs first, with their checks."""
    query = (
        select(ValidationRun)
        .options(selectinload(ValidationRun.checks))
        .order_by(ValidationRun.started_at.desc(), ValidationRun.id)
        .limit(v.integer(limit, "limit", minimum=1))
    )
    return list(session.scalars(query))


# ------------------------------------------------------------------ A/B evaluations
def create_evaluation(
    session: Session,
    trigger: str,
    model_a: str,
    model_b: str,
    data_name: str,
    n_resamples: int,
    seed: int,
    primary_metric: str,
    dataset: str | None = None,
) -> Evaluation:
    """Record a comparison to run (``queued``): the names as given and the data's name, and
    the dataset path a worker reads (what a re-run needs; None for inline pairs)."""
    row = Evaluation(
        trigger=v.choice(trigger, EVALUATION_TRIGGERS, "evaluation trigger"),
        model_a=v.text(model_a, "model_a", max_len=500),
        model_b=v.text(model_b, "model_b", max_len=500),
        data_name=v.text(data_name, "data_name"),
        n_resamples=v.integer(n_resamples, "n_resamples", minimum=1),
        seed=v.integer(seed, "seed", minimum=0),
        primary_metric=v.text(primary_metric, "primary_metric", max_len=32),
        dataset=v.optional_text(dataset, "dataset"),
        status="queued",
    )
    session.add(row)
    session.flush()
    return row


def start_evaluation(
    session: Session,
    evaluation_id: Id,
    model_a_loaded: str,
    model_b_loaded: str,
    data_sha256: str,
    data_rows: int,
    model_a_version: str | None = None,
    model_b_version: str | None = None,
) -> bool:
    """Claim a ``queued`` evaluation (``running``), recording what each name loaded and the
    data's digest and rows as read; True only for the one caller that claimed it."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    values = {
        "model_a_loaded": v.text(model_a_loaded, "model_a_loaded"),
        "model_b_loaded": v.text(model_b_loaded, "model_b_loaded"),
        "model_a_version": v.optional_text(model_a_version, "model_a_version", max_len=500),
        "model_b_version": v.optional_text(model_b_version, "model_b_version", max_len=500),
        "data_sha256": _sha256(data_sha256, "data_sha256"),
        "data_rows": v.integer(data_rows, "data_rows", minimum=1),
    }
    now = utcnow()
    values["attempts"] = Evaluation.attempts + 1
    return _move_evaluation(
        session, eid, ("queued",), status="running", started_at=now, heartbeat_at=now, **values
    )


def beat_evaluation(session: Session, evaluation_id: Id) -> bool:
    """Refresh a running evaluation's lease; False once it is no longer running."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    return _move_evaluation(session, eid, ("running",), heartbeat_at=utcnow())


def lost_evaluations(session: Session, lease_expired_before: datetime) -> list[Evaluation]:
    """``running`` evaluations whose lease (or, with none, start) is older than the cutoff:
    their worker is gone."""
    seen = func.coalesce(Evaluation.heartbeat_at, Evaluation.started_at)
    query = select(Evaluation).where(Evaluation.status == "running", seen < lease_expired_before)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def requeue_lost_evaluation(session: Session, evaluation_id: Id, reason: str) -> bool:
    """A lost ``running`` evaluation back to ``queued`` to run again, the rescue recorded;
    True if this call moved it."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    return _rescue_evaluation(session, eid, "rerun", v.text(reason, "reason"), status="queued")


def fail_lost_evaluation(session: Session, evaluation_id: Id, reason: str) -> bool:
    """A lost ``running`` evaluation ``failed`` with the reason, the rescue recorded."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    reason = v.text(reason, "reason")
    return _rescue_evaluation(
        session, eid, "failed", reason, status="failed", error=reason, finished_at=utcnow()
    )


def _rescue_evaluation(session: Session, eid: Any, action: str, reason: str, **values: Any) -> bool:
    row = session.get(Evaluation, eid, populate_existing=True)
    if row is None or row.status != "running":
        return False
    entry = {"at": utcnow().isoformat(), "action": action, "reason": reason}
    rescues = [*(row.rescues or []), entry]
    stmt = (
        update(Evaluation)
        .where(
            Evaluation.id == eid,
            Evaluation.status == "running",
            Evaluation.attempts == row.attempts,  # nobody claimed it again meanwhile
        )
        .values(rescues=rescues, **values)
    )
    moved = _update(session, stmt) == 1
    _forget(session, Evaluation, eid)
    return moved


def finish_evaluation(
    session: Session,
    evaluation_id: Id,
    metrics_a: dict[str, Any],
    metrics_b: dict[str, Any],
    differences: dict[str, Any],
    verdict: str,
    duration_s: float | None = None,
) -> bool:
    """A running evaluation ``succeeded`` with its figures; True if this call finished it
    (the first outcome wins)."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    values = {
        "metrics_a": v.json_object(metrics_a, "metrics_a", strict=True),
        "metrics_b": v.json_object(metrics_b, "metrics_b", strict=True),
        "differences": v.json_object(differences, "differences", strict=True),
        "verdict": v.choice(verdict, EVALUATION_VERDICTS, "verdict"),
        "duration_s": v.optional_number(duration_s, "duration_s", minimum=0.0),
    }
    return _move_evaluation(
        session, eid, ("running",), status="succeeded", finished_at=utcnow(), **values
    )


def fail_evaluation(session: Session, evaluation_id: Id, error: str) -> bool:
    """A queued or running evaluation ``failed`` with its reason; True if this call ended it."""
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    error = v.text(error, "error")
    return _move_evaluation(
        session, eid, ("queued", "running"), status="failed", error=error, finished_at=utcnow()
    )


def fail_lost_evaluations(session: Session, started_before: datetime, reason: str) -> list[str]:
    """Fail every evaluation still ``running`` that started before ``started_before``, with
    ``reason``; the ids it failed. The caller picks a moment no live run can predate (the
    task's hard time limit ago): its worker was killed before it could record an outcome."""
    reason = v.text(reason, "reason")
    stale = session.scalars(
        select(Evaluation.id).where(
            Evaluation.status == "running", Evaluation.started_at < started_before
        )
    ).all()
    return [
        str(eid)
        for eid in stale
        if _move_evaluation(
            session, eid, ("running",), status="failed", error=reason, finished_at=utcnow()
        )
    ]


def _move_evaluation(
    session: Session, eid: Any, from_statuses: tuple[str, ...], **values: Any
) -> bool:
    """Set ``values`` on the evaluation if its status is one of ``from_statuses``, in one
    compare-and-swap UPDATE; True if this call moved it (an unknown id raises)."""
    stmt = (
        update(Evaluation)
        .where(Evaluation.id == eid, Evaluation.status.in_(from_statuses))
        .values(**values)
    )
    moved = _update(session, stmt) == 1
    _forget(session, Evaluation, eid)
    if not moved:
        _require(session, Evaluation, eid, "evaluation")
    return moved


def get_evaluation(session: Session, evaluation_id: Id) -> Evaluation | None:
    eid = v.as_uuid(evaluation_id, "evaluation_id")
    query = select(Evaluation).where(Evaluation.id == eid)
    return session.scalars(query.execution_options(populate_existing=True)).one_or_none()


def list_evaluations(
    session: Session, after: Id | None = None, limit: int = 20, status: str | None = None
) -> list[Evaluation]:
    """Newest first; ``after`` an evaluation id (cursor paging), ``status`` one of
    ``queued``, ``running``, ``succeeded``, ``failed``."""
    cursor = None if after is None else v.as_uuid(after, "after")
    if status is not None:
        v.choice(status, EVALUATION_STATUSES, "evaluation status")
    return _page(session, Evaluation, cursor, limit, status=status)


def _sha256(value: object, what: str) -> str:
    digest = v.text(value, what).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidValue(f"{what} must be 64 hex digits, got {value!r}")
    return digest

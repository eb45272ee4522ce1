"""The ORM: one typed class per table (SQLAlchemy 2.0 ``Mapped[...]`` style).

The same classes and the same migrations serve PostgreSQL (production) and SQLite (the
embedded default), so only portable types are used: ``Uuid`` (native on PostgreSQL,
CHAR(32) on SQLite), JSON (JSONB on PostgreSQL), floats as real numeric columns, and
:class:`UTCDateTime`, which always hands back timezone-aware UTC times, even from
SQLite, which has no time zone type of its own.

Allowed values (statuses, triggers) are enforced twice on purpose: ``db/repo.py`` refuses a
bad value with a clear message before writing anything, and a CHECK constraint guards the
table against any other writer (a psql session, a future service).

Every constraint and index is named through :data:`NAMING_CONVENTION`, so Alembic
autogenerate compares the migrated schema and these classes without spurious diffs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# The project every row of a deployment from before projects (revision 0008) belongs to, and
# where a job submitted without one goes (``send_task``, the CLI, keys of EMBEDDING_API_KEYS).
DEFAULT_PROJECT_ID = "proj_default"
DEFAULT_PROJECT_NAME = "default"
KEY_ROLES = ("admin", "member", "read_only")
# A project's quotas (NULL: none), in the order `embedctl projects show` prints them.
PROJECT_LIMITS = (
    "max_running_jobs",
    "max_queued_jobs",
    "embeddings_rpm",
    "embeddings_tpm",
    "max_storage_bytes",
)
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_FINAL_STATUSES = ("succeeded", "failed", "cancelled")
RUN_TRIGGERS = ("cli", "ci", "api")
RUN_STATUSES = ("running", "passed", "failed", "error")
RUN_FINAL_STATUSES = ("passed", "failed", "error")
CHECK_STATUSES = ("passed", "failed", "unavailable", "error")
EVALUATION_TRIGGERS = ("cli", "task", "api")
EVALUATION_STATUSES = ("queued", "running", "succeeded", "failed")
EVALUATION_FINAL_STATUSES = ("succeeded", "failed")
# The verdicts of embedding/evaluation/compare.py (db/ keeps its own copy for the CHECK constraint;
# tests/test_compare.py holds the two equal).
EVALUATION_VERDICTS = ("A better", "B better", "no significant difference")
# What can happen to a fine-tune job, in the order a timeline usually shows them.
JOB_EVENT_KINDS = (
    "created",
    "sent",
    "claimed",
    "epoch",
    "checkpoint",
    "best_epoch",
    "released",
    "retried",
    "rescued",
    "cancel_requested",
    "cancelled",
    "failed",
    "succeeded",
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact); plain JSON text elsewhere. Python None is SQL
# NULL ("no value"), not the JSON literal null.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only kind stored)."""
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _finite(column: str) -> str:
    # Portable "finite": NaN compares greater than every number on PostgreSQL and is
    # stored as NULL by SQLite; +-inf lie outside the bounds. 1e308 < the largest double.
    return f"{column} > -1e308 AND {column} < 1e308"


class UTCDateTime(TypeDecorator[datetime]):
    """TIMESTAMP WITH TIME ZONE that reads back aware UTC datetimes on every backend.

    SQLite keeps naive text, so values are converted to UTC before storing and tagged as
    UTC when read. Naive datetimes are refused: their meaning depends on the writer's clock.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created_at() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())


def _project_id() -> Mapped[str]:
    """The project a tenant's row belongs to. No default: every writer names it
    (``db/repo``'s create functions require it); revision 0008 put older rows in
    ``proj_default``."""
    return mapped_column(ForeignKey("projects.id"), index=True)


class Project(Base):
    """A team's walled space: its keys see only rows with its ``id`` in ``project_id``."""

    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint(f"weight > 0 AND {_finite('weight')}", name="weight_positive"),
        *(
            CheckConstraint(f"{column} IS NULL OR {column} > 0", name=f"{column}_positive")
            for column in PROJECT_LIMITS
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # proj_<hex>
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _created_at()
    # Archived: its keys stop working, its rows stay (readable by admin keys).
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Its share of the GPU fleet against the others' (workers/fleet/fair_share.py) and its
    # quotas (workers/fleet/quotas.py); a quota left NULL is no limit.
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default=text("1"))
    max_running_jobs: Mapped[int | None] = mapped_column(Integer)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer)
    embeddings_rpm: Mapped[int | None] = mapped_column(Integer)
    embeddings_tpm: Mapped[int | None] = mapped_column(Integer)
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)


class ApiKey(Base):
    """An API key: only the SHA-256 of its secret is kept (the secret is shown once).

    ``admin`` keys have no project (they manage projects and keys and read every project);
    ``member`` and ``read_only`` keys belong to one project.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(_in("role", KEY_ROLES), name="role"),
        CheckConstraint(
            "(role = 'admin') = (project_id IS NULL)", name="admin_keys_have_no_project"
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # key_<hex>
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # The secret's first and last characters ("sk-proj-ab...wxyz"), to tell keys apart.
    redacted_value: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """One state-changing call: who (a key id, never the key; ``cli`` or ``open`` when no key
    was involved), what, on which object, in which project."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_project_id_id", "project_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = _created_at()
    actor: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(100))
    project_id: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class ModelVersion(Base):
    """A saved model: ``name`` + ``version`` (1, 2, ...) with the sha256 of its weights."""

    __tablename__ = "model_versions"
    __table_args__ = (
        # Names are a project's own: two teams may both have a "minilm-ft" version 1.
        UniqueConstraint("project_id", "name", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = _project_id()
    name: Mapped[str] = mapped_column(String(500))
    version: Mapped[int] = mapped_column(Integer)
    base_model: Mapped[str] = mapped_column(String(500))
    path: Mapped[str] = mapped_column(Text)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The folder's size on disk at registration (a project's stored bytes count it).
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _created_at()


class UsageDaily(Base):
    """What a project used on one UTC day, summed as it happens (``db/repo/usage.py``):
    GPU-seconds of training (each attempt's claim to its end, once) and of embedding, pairs
    trained, tokens embedded and embedding requests. Fair share reads its recent training
    seconds; ``embedctl usage`` and the admin usage route read it whole."""

    __tablename__ = "usage_daily"
    __table_args__ = (
        CheckConstraint(
            "gpu_seconds_training >= 0 AND gpu_seconds_embedding >= 0 AND pairs_trained >= 0 "
            "AND tokens_embedded >= 0 AND embedding_requests >= 0",
            name="counts_non_negative",
        ),
    )

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    gpu_seconds_training: Mapped[float] = mapped_column(
        Float, default=0.0, server_default=text("0")
    )
    gpu_seconds_embedding: Mapped[float] = mapped_column(
        Float, default=0.0, server_default=text("0")
    )
    pairs_trained: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    tokens_embedded: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    embedding_requests: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))


class FinetuneJob(Base):
    """A fine-tune job and its outbox state (``sent_at`` null: the message is still to send)."""

    __tablename__ = "finetune_jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_finetune_jobs_status_created_at", "status", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[str] = _project_id()
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    # sha256 of the canonical request that created the job (workers/jobs/idempotency.py): the
    # same key with another request is a conflict. Null for jobs from before revision 0003.
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(500))
    # The validated request (loss, epochs, lr, batch_size, data or dataset path, ...).
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued", server_default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    worker: Mapped[str | None] = mapped_column(String(255))  # hostname of the last claimant
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The running worker's lease: refreshed while it trains; a stale one may be taken over.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the current (or last) attempt claimed it: what its GPU time is counted from.
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    # What training concluded, written with the model version (revision 0005): the eval set
    # (``eval_source``), the best epoch and its metric, the epoch whose weights became the
    # version, whether it stopped early, eval before/after. Null until the job succeeds.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    epochs: Mapped[list[EpochMetric]] = relationship(
        back_populates="job",
        order_by="EpochMetric.epoch",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    model_version: Mapped[ModelVersion | None] = relationship()


class EpochMetric(Base):
    """One finished epoch of a job; (job_id, epoch) is unique so a rerun overwrites it."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (
        UniqueConstraint("job_id", "epoch"),
        CheckConstraint("epoch >= 0", name="epoch_non_negative"),
        CheckConstraint(_finite("train_loss"), name="train_loss_finite"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("finetune_jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float] = mapped_column(Float)
    eval: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    lr: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)
    samples_per_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created_at()

    job: Mapped[FinetuneJob] = relationship(back_populates="epochs")


class JobEvent(Base):
    """One step of a job's life, written in the same transaction as the change it records.

    The timeline an operator reads (``embedctl jobs show``, the API's ``/events``): who
    claimed the job, each finished epoch and checkpoint, every rescue and retry, the outcome
    with its reason. Ordered by ``id`` (insertion order); ``at`` is the database time.
    """

    __tablename__ = "job_events"
    __table_args__ = (
        CheckConstraint(_in("kind", JOB_EVENT_KINDS), name="kind"),
        Index("ix_job_events_job_id_id", "job_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("finetune_jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    at: Mapped[datetime] = _created_at()


class BenchmarkResult(Base):
    """One benchmark measurement; the table is the performance trend over releases."""

    __tablename__ = "benchmark_results"
    __table_args__ = (Index("ix_benchmark_results_model_created_at", "model", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(500))
    device: Mapped[str] = mapped_column(String(64))
    precision: Mapped[str] = mapped_column(String(32))
    batch_size: Mapped[int] = mapped_column(Integer)
    latency_p50_ms: Mapped[float] = mapped_column(Float)
    latency_p95_ms: Mapped[float] = mapped_column(Float)
    latency_p99_ms: Mapped[float] = mapped_column(Float)
    latency_mean_ms: Mapped[float] = mapped_column(Float)
    latency_min_ms: Mapped[float] = mapped_column(Float)
    latency_max_ms: Mapped[float] = mapped_column(Float)
    throughput_per_s: Mapped[float] = mapped_column(Float)
    grad_step_ms: Mapped[float | None] = mapped_column(Float)
    optimizer_step_ms: Mapped[float | None] = mapped_column(Float)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    package_version: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = _created_at()


class ValidationRun(Base):
    """One run of the validation suite (the chord); ``verdict`` is set by the summary."""

    __tablename__ = "validation_runs"
    __table_args__ = (
        CheckConstraint(_in("trigger", RUN_TRIGGERS), name="trigger"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[str] = _project_id()
    trigger: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="running", server_default="running")
    verdict: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, server_default=func.now(), index=True
    )
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    models: Mapped[list[str]] = mapped_column(JSONType, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    # Refreshed while one of its checks runs: a run whose checks all stopped (none running,
    # none waiting) is lost, and the lifeline ends it with the reason.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    checks: Mapped[list[ValidationCheck]] = relationship(
        back_populates="run",
        order_by="ValidationCheck.name",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class ValidationCheck(Base):
    """One check's result within a run; (run_id, name) is unique so a retry overwrites it."""

    __tablename__ = "validation_checks"
    __table_args__ = (
        UniqueConstraint("run_id", "name"),
        CheckConstraint(_in("status", CHECK_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("validation_runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))
    figures: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # [{name, threshold, actual, passed}, ...]
    criteria: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    duration_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created_at()

    run: Mapped[ValidationRun] = relationship(back_populates="checks")


class Evaluation(Base):
    """An A/B comparison of two models on (query, document) pairs (``embedding.evaluation.compare``).

    Created ``queued`` (API, task) or straight ``running`` (CLI); ``running`` records what
    was loaded for each name and the data's digest and row count as the run read them;
    ``succeeded`` holds both models' metrics, the differences (B - A) with their confidence
    intervals, and the verdict on the primary metric.
    """

    __tablename__ = "evaluations"
    __table_args__ = (
        CheckConstraint(_in("trigger", EVALUATION_TRIGGERS), name="trigger"),
        CheckConstraint(_in("status", EVALUATION_STATUSES), name="status"),
        CheckConstraint(
            f"verdict IS NULL OR {_in('verdict', EVALUATION_VERDICTS)}", name="verdict"
        ),
        CheckConstraint("n_resamples >= 1", name="n_resamples_positive"),
        CheckConstraint("seed >= 0", name="seed_non_negative"),
        CheckConstraint("data_rows IS NULL OR data_rows >= 1", name="data_rows_positive"),
        Index("ix_evaluations_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[str] = _project_id()
    trigger: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="queued", server_default="queued")
    # The names as given, and what each resolved to: the spec or folder loaded, and the
    # registered version ("name:N") when the name was one.
    model_a: Mapped[str] = mapped_column(String(500))
    model_b: Mapped[str] = mapped_column(String(500))
    model_a_loaded: Mapped[str | None] = mapped_column(Text)
    model_b_loaded: Mapped[str | None] = mapped_column(Text)
    model_a_version: Mapped[str | None] = mapped_column(String(500))
    model_b_version: Mapped[str | None] = mapped_column(String(500))
    # The data: a path, an API file id, or "inline"; its sha256 and rows as the run read it.
    data_name: Mapped[str] = mapped_column(Text)
    data_sha256: Mapped[str | None] = mapped_column(String(64))
    data_rows: Mapped[int | None] = mapped_column(Integer)
    n_resamples: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    primary_metric: Mapped[str] = mapped_column(String(32))
    metrics_a: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    metrics_b: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # metric -> {"b_minus_a", "ci_low", "ci_high"}
    differences: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    verdict: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The dataset path a worker reads (None: inline pairs, or the CLI's own file): what a
    # re-run after a lost worker needs.
    dataset: Mapped[str | None] = mapped_column(Text)
    # The running worker's lease, refreshed while it runs; stale: its worker is gone.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Runs started (claims); the lifeline stops re-running at the job attempts cap.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the lifeline did, oldest first: [{"at", "action": "rerun" | "failed", "reason"}].
    rescues: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)


# ------------------------------------------------------------------ the HTTP API's records
FILE_PURPOSES = ("fine-tune", "batch", "batch_output")
BATCH_STATUSES = (
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)
BATCH_FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")


class StoredFile(Base):
    """An uploaded (or batch-written) JSONL file; the bytes live under the artifacts dir."""

    __tablename__ = "files"
    __table_args__ = (
        CheckConstraint(_in("purpose", FILE_PURPOSES), name="purpose"),
        CheckConstraint("bytes >= 0", name="bytes_non_negative"),
        Index("ix_files_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = _project_id()
    purpose: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(500))
    bytes: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()


class FinetuneJobRequest(Base):
    """What an API client asked for beyond the job's payload: the file ids. (The suffix is
    in the job's params and the request digest on the job, as for every other client.)"""

    __tablename__ = "finetune_job_requests"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("finetune_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created_at()


class Batch(Base):
    """An embeddings batch: its input file, its chunks (line ranges, one Celery task each)
    and the counts the chunks add up as they finish."""

    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint(_in("status", BATCH_STATUSES), name="status"),
        Index("ix_batches_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = _project_id()
    input_file_id: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(100))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    # [[first_line, end_line), ...] in input order; one task per range.
    chunks: Mapped[list[list[int]]] = mapped_column(JSONType, default=list)
    # Model names as the requests give them -> what the worker loads (spec or folder).
    models: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    total: Mapped[int] = mapped_column(Integer, default=0)
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    created_at: Mapped[datetime] = _created_at()
    in_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finalizing_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelling_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    done_chunks: Mapped[list[BatchChunk]] = relationship(
        order_by="BatchChunk.chunk", cascade="all, delete-orphan", passive_deletes=True
    )


class BatchChunk(Base):
    """One finished chunk of a batch; (batch_id, chunk) is unique so a redelivered task
    counts once."""

    __tablename__ = "batch_chunks"
    __table_args__ = (
        UniqueConstraint("batch_id", "chunk"),
        CheckConstraint("completed >= 0 AND failed >= 0", name="counts_non_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    chunk: Mapped[int] = mapped_column(Integer)
    completed: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created_at()

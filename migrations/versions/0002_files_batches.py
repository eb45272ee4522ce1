"""The HTTP API's records: uploaded files, fine-tune job requests, batches and their chunks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Written to match db/models.py (checked by tests/test_db_schema.py's autogenerate compare):
portable types only, every constraint named by the models' convention.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
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


def _time(name: str, nullable: bool = True, now: bool = False) -> sa.Column:
    default = sa.func.now() if now else None
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("filename", sa.String(length=500), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        _time("created_at", nullable=False, now=True),
        sa.CheckConstraint("bytes >= 0", name=op.f("ck_files_bytes_non_negative")),
        sa.CheckConstraint(
            _in("purpose", ("fine-tune", "batch", "batch_output")), name=op.f("ck_files_purpose")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
    )
    with op.batch_alter_table("files") as batch_op:
        batch_op.create_index("ix_files_created_at", ["created_at"])

    op.create_table(
        "finetune_job_requests",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("suffix", sa.String(length=64), nullable=True),
        sa.Column("training_file", sa.String(length=64), nullable=False),
        sa.Column("validation_file", sa.String(length=64), nullable=True),
        _time("created_at", nullable=False, now=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["finetune_jobs.id"],
            name=op.f("fk_finetune_job_requests_job_id_finetune_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_finetune_job_requests")),
        sa.UniqueConstraint(
            "idempotency_key", name=op.f("uq_finetune_job_requests_idempotency_key")
        ),
    )

    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("input_file_id", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=100), nullable=False),
        sa.Column("completion_window", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("chunks", JSON, nullable=False),
        sa.Column("models", JSON, nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("output_file_id", sa.String(length=64), nullable=True),
        sa.Column("error_file_id", sa.String(length=64), nullable=True),
        sa.Column("errors", JSON, nullable=True),
        sa.Column("metadata", JSON, nullable=True),
        _time("created_at", nullable=False, now=True),
        _time("in_progress_at"),
        _time("finalizing_at"),
        _time("completed_at"),
        _time("failed_at"),
        _time("cancelling_at"),
        _time("cancelled_at"),
        _time("expires_at"),
        sa.CheckConstraint(_in("status", BATCH_STATUSES), name=op.f("ck_batches_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    with op.batch_alter_table("batches") as batch_op:
        batch_op.create_index("ix_batches_created_at", ["created_at"])

    op.create_table(
        "batch_chunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        _time("created_at", nullable=False, now=True),
        sa.CheckConstraint(
            "completed >= 0 AND failed >= 0", name=op.f("ck_batch_chunks_counts_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_batch_chunks_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_chunks")),
        sa.UniqueConstraint("batch_id", "chunk", name=op.f("uq_batch_chunks_batch_id_chunk")),
    )


def downgrade() -> None:
    op.drop_table("batch_chunks")
    op.drop_table("batches")
    op.drop_table("finetune_job_requests")
    op.drop_table("files")

"""The job timeline: one ``job_events`` row per step of a fine-tune job's life.

Revision ID: 0004
Revises: 0002 (to be re-chained on 0003 when that lands)
Create Date: 2026-11-26

Written to match db/models.py (checked by tests/test_db_schema.py's autogenerate compare).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
KINDS = (
    "created",
    "sent",
    "claimed",
    "epoch",
    "checkpoint",
    "released",
    "retried",
    "rescued",
    "cancel_requested",
    "cancelled",
    "failed",
    "succeeded",
)


def upgrade() -> None:
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("data", JSON, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            f"kind IN ({', '.join(repr(k) for k in KINDS)})", name=op.f("ck_job_events_kind")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["finetune_jobs.id"],
            name=op.f("fk_job_events_job_id_finetune_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
    )
    with op.batch_alter_table("job_events") as batch_op:
        batch_op.create_index("ix_job_events_job_id_id", ["job_id", "id"])


def downgrade() -> None:
    op.drop_table("job_events")

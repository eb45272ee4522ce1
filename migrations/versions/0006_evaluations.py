"""A/B evaluations: one ``evaluations`` row per comparison of two models.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

Written to match db/models.py (checked by tests/test_db_schema.py's autogenerate compare).
Self-contained: it creates one table and touches no other.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TRIGGERS = ("cli", "task", "api")
STATUSES = ("queued", "running", "succeeded", "failed")
VERDICTS = ("A better", "B better", "no significant difference")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _time(name: str, nullable: bool = True, now: bool = False) -> sa.Column:
    default = sa.func.now() if now else None
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("trigger", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("model_a", sa.String(length=500), nullable=False),
        sa.Column("model_b", sa.String(length=500), nullable=False),
        sa.Column("model_a_loaded", sa.Text(), nullable=True),
        sa.Column("model_b_loaded", sa.Text(), nullable=True),
        sa.Column("model_a_version", sa.String(length=500), nullable=True),
        sa.Column("model_b_version", sa.String(length=500), nullable=True),
        sa.Column("data_name", sa.Text(), nullable=False),
        sa.Column("data_sha256", sa.String(length=64), nullable=True),
        sa.Column("data_rows", sa.Integer(), nullable=True),
        sa.Column("n_resamples", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("primary_metric", sa.String(length=32), nullable=False),
        sa.Column("metrics_a", JSON, nullable=True),
        sa.Column("metrics_b", JSON, nullable=True),
        sa.Column("differences", JSON, nullable=True),
        sa.Column("verdict", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        _time("created_at", nullable=False, now=True),
        _time("started_at"),
        _time("finished_at"),
        sa.CheckConstraint(_in("trigger", TRIGGERS), name=op.f("ck_evaluations_trigger")),
        sa.CheckConstraint(_in("status", STATUSES), name=op.f("ck_evaluations_status")),
        sa.CheckConstraint(
            f"verdict IS NULL OR {_in('verdict', VERDICTS)}", name=op.f("ck_evaluations_verdict")
        ),
        sa.CheckConstraint("n_resamples >= 1", name=op.f("ck_evaluations_n_resamples_positive")),
        sa.CheckConstraint("seed >= 0", name=op.f("ck_evaluations_seed_non_negative")),
        sa.CheckConstraint(
            "data_rows IS NULL OR data_rows >= 1", name=op.f("ck_evaluations_data_rows_positive")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    with op.batch_alter_table("evaluations") as batch_op:
        batch_op.create_index("ix_evaluations_created_at", ["created_at"])


def downgrade() -> None:
    op.drop_table("evaluations")

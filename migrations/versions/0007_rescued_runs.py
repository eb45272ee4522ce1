"""Evaluations and validation runs get a lease, so the lifeline can rescue them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

A compare task or a validation check whose worker is killed used to leave its row
``running`` for ever. ``evaluations`` gain ``dataset`` (the path a re-run reads),
``heartbeat_at`` (the lease), ``attempts`` and ``rescues`` (what the lifeline did: re-run or
failed, and why); ``validation_runs`` gain ``heartbeat_at``.

Self-contained: only new nullable (or defaulted) columns on these two tables.
Written to match db/models.py (checked by tests/test_db_schema.py's autogenerate compare).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("dataset", sa.Text(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("rescues", JSON, nullable=True))
    with op.batch_alter_table("validation_runs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("validation_runs") as batch:
        batch.drop_column("heartbeat_at")
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("rescues")
        batch.drop_column("attempts")
        batch.drop_column("heartbeat_at")
        batch.drop_column("dataset")

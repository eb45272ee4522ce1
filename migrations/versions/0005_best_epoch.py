"""Which epoch became the version: the job's ``result``, and a ``best_epoch`` event.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

``finetune_jobs.result`` (JSON, null until the job succeeds): what training concluded —
what was evaluated (``eval_source``: the validation set or a bounded sample of the training
rows), the epoch with the best validation metric and the metric, the epoch whose weights
became the model version, whether early stopping ended it, eval before and after.
``job_events.kind`` may now be ``best_epoch`` ("best epoch N selected ..."). The per-epoch
validation figures stay where they were, in ``epoch_metrics.eval``.

Self-contained: it touches only these two tables, so it can be re-chained after another
revision without change.

Written to match db/models.py (checked by tests/test_db_schema.py's autogenerate compare;
autogenerate does not compare CHECK constraints, tests/test_best_epoch.py writes the new kind).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
KINDS_BEFORE = (
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
KINDS = (*KINDS_BEFORE[:5], "best_epoch", *KINDS_BEFORE[5:])


def _kind_check(kinds: tuple[str, ...]) -> str:
    return f"kind IN ({', '.join(repr(k) for k in kinds)})"


def upgrade() -> None:
    with op.batch_alter_table("finetune_jobs") as batch_op:
        batch_op.add_column(sa.Column("result", JSON, nullable=True))
    with op.batch_alter_table("job_events") as batch_op:
        batch_op.drop_constraint(op.f("ck_job_events_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_job_events_kind"), _kind_check(KINDS))


def downgrade() -> None:
    op.execute("DELETE FROM job_events WHERE kind = 'best_epoch'")
    with op.batch_alter_table("job_events") as batch_op:
        batch_op.drop_constraint(op.f("ck_job_events_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_job_events_kind"), _kind_check(KINDS_BEFORE))
    with op.batch_alter_table("finetune_jobs") as batch_op:
        batch_op.drop_column("result")

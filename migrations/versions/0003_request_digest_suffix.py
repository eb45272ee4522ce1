"""One idempotency mechanism for every way in, and the suffix on the job.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

``finetune_jobs.request_sha256``: the canonical digest of the request that created the
job (the payload for ``send_task``, the CLI and the Python client; the HTTP body for the
API), so the same idempotency key with another request is refused as a conflict, whoever
sent it. ``finetune_job_requests`` loses the key, digest and suffix it kept for the API
alone: the digest moves to the job, the suffix into the job's params (where every job now
keeps it; it names the model version). Jobs from before this revision have no digest: a
repeat of their key is answered with the job, as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
jobs = sa.table(
    "finetune_jobs",
    sa.column("id", sa.Uuid()),
    sa.column("params", JSON),
    sa.column("request_sha256", sa.String(64)),
)
requests = sa.table(
    "finetune_job_requests",
    sa.column("job_id", sa.Uuid()),
    sa.column("request_sha256", sa.String(64)),
    sa.column("suffix", sa.String(64)),
    sa.column("idempotency_key", sa.String(200)),
)


def upgrade() -> None:
    with op.batch_alter_table("finetune_jobs") as batch_op:
        batch_op.add_column(sa.Column("request_sha256", sa.String(length=64), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(
            requests.c.job_id, requests.c.request_sha256, requests.c.suffix, jobs.c.params
        ).select_from(requests.join(jobs, jobs.c.id == requests.c.job_id))
    ).all()
    for job_id, digest, suffix, params in rows:
        params = dict(params or {})
        if suffix:
            params["suffix"] = suffix
        conn.execute(
            jobs.update().where(jobs.c.id == job_id).values(request_sha256=digest, params=params)
        )
    with op.batch_alter_table("finetune_job_requests") as batch_op:
        batch_op.drop_constraint("uq_finetune_job_requests_idempotency_key", type_="unique")
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("request_sha256")
        batch_op.drop_column("suffix")


def downgrade() -> None:
    with op.batch_alter_table("finetune_job_requests") as batch_op:
        batch_op.add_column(sa.Column("suffix", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("request_sha256", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(requests.c.job_id, jobs.c.request_sha256, jobs.c.params).select_from(
            requests.join(jobs, jobs.c.id == requests.c.job_id)
        )
    ).all()
    for job_id, digest, params in rows:
        conn.execute(
            requests.update()
            .where(requests.c.job_id == job_id)
            .values(request_sha256=digest or "", suffix=(params or {}).get("suffix"))
        )
    with op.batch_alter_table("finetune_job_requests") as batch_op:
        batch_op.alter_column("request_sha256", server_default=None)
        batch_op.create_unique_constraint(
            "uq_finetune_job_requests_idempotency_key", ["idempotency_key"]
        )
    with op.batch_alter_table("finetune_jobs") as batch_op:
        batch_op.drop_column("request_sha256")

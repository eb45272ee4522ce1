"""Sharing the GPU fleet: each project's weight and quotas, daily usage, attempts' claims.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

``projects`` gain ``weight`` (1 for every project there) and five quotas, NULL meaning none
(``max_running_jobs``, ``max_queued_jobs``, ``embeddings_rpm``, ``embeddings_tpm``,
``max_storage_bytes``). ``usage_daily`` sums what each project used per UTC day.
``finetune_jobs.claimed_at`` is when the current attempt claimed the job (its GPU time runs
from there); ``model_versions.bytes`` the size of a registered model's folder.

Written to match db/models.py (checked by tests/test_db_schema.py's autogenerate compare).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIMITS = (
    ("max_running_jobs", sa.Integer()),
    ("max_queued_jobs", sa.Integer()),
    ("embeddings_rpm", sa.Integer()),
    ("embeddings_tpm", sa.Integer()),
    ("max_storage_bytes", sa.BigInteger()),
)


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch_op:
        batch_op.add_column(
            sa.Column("weight", sa.Float(), server_default=sa.text("1"), nullable=False)
        )
        for name, kind in LIMITS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))
        batch_op.create_check_constraint(
            "weight_positive", "weight > 0 AND weight > -1e308 AND weight < 1e308"
        )
        for name, _ in LIMITS:
            batch_op.create_check_constraint(f"{name}_positive", f"{name} IS NULL OR {name} > 0")
    with op.batch_alter_table("finetune_jobs") as batch_op:
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.add_column(sa.Column("bytes", sa.BigInteger(), nullable=True))
    op.create_table(
        "usage_daily",
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("gpu_seconds_training", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("gpu_seconds_embedding", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("pairs_trained", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("tokens_embedded", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "embedding_requests", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.CheckConstraint(
            "gpu_seconds_training >= 0 AND gpu_seconds_embedding >= 0 AND pairs_trained >= 0 "
            "AND tokens_embedded >= 0 AND embedding_requests >= 0",
            name=op.f("ck_usage_daily_counts_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_usage_daily_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("project_id", "day", name=op.f("pk_usage_daily")),
    )


def downgrade() -> None:
    op.drop_table("usage_daily")
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.drop_column("bytes")
    with op.batch_alter_table("finetune_jobs") as batch_op:
        batch_op.drop_column("claimed_at")
    with op.batch_alter_table("projects") as batch_op:
        for name, _ in reversed(LIMITS):
            batch_op.drop_constraint(f"{name}_positive", type_="check")
            batch_op.drop_column(name)
        batch_op.drop_constraint("weight_positive", type_="check")
        batch_op.drop_column("weight")

"""Projects, API keys and the audit list; every tenant's row belongs to a project.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

``projects`` (with the ``default`` project, ``proj_default``), ``api_keys`` (hashed secrets)
and ``audit_events`` are created. ``finetune_jobs``, ``files``, ``batches``, ``evaluations``,
``validation_runs`` and ``model_versions`` gain ``project_id`` (NOT NULL, a foreign key to
``projects``, indexed): every row already there is put in ``proj_default``, so a deployment
from before projects keeps working, its legacy keys being members of that project. Version
names become unique per project.

Written to match db/models.py (checked by tests/test_db_schema.py's autogenerate compare).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
DEFAULT_PROJECT_ID = "proj_default"
TENANT_TABLES = (
    "model_versions",
    "finetune_jobs",
    "validation_runs",
    "evaluations",
    "files",
    "batches",
)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.execute(
        sa.text("INSERT INTO projects (id, name) VALUES (:id, 'default')").bindparams(
            id=DEFAULT_PROJECT_ID
        )
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("redacted_value", sa.String(length=40), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'member', 'read_only')", name=op.f("ck_api_keys_role")
        ),
        sa.CheckConstraint(
            "(role = 'admin') = (project_id IS NULL)",
            name=op.f("ck_api_keys_admin_keys_have_no_project"),
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_api_keys_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_api_keys_secret_sha256")),
    )
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_project_id"), ["project_id"], unique=False)
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("actor", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=100), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=True),
        sa.Column("data", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.create_index("ix_audit_events_project_id_id", ["project_id", "id"], unique=False)

    for table in TENANT_TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("project_id", sa.String(length=40), nullable=True))
        op.execute(
            sa.text(f"UPDATE {table} SET project_id = :id").bindparams(id=DEFAULT_PROJECT_ID)
        )
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column("project_id", existing_type=sa.String(length=40), nullable=False)
            batch_op.create_foreign_key(
                batch_op.f(f"fk_{table}_project_id_projects"), "projects", ["project_id"], ["id"]
            )
            batch_op.create_index(batch_op.f(f"ix_{table}_project_id"), ["project_id"])
            if table == "model_versions":
                batch_op.drop_constraint("uq_model_versions_name_version", type_="unique")
                batch_op.create_unique_constraint(
                    batch_op.f("uq_model_versions_project_id_name_version"),
                    ["project_id", "name", "version"],
                )


def downgrade() -> None:
    for table in reversed(TENANT_TABLES):
        with op.batch_alter_table(table) as batch_op:
            if table == "model_versions":
                batch_op.drop_constraint(
                    "uq_model_versions_project_id_name_version", type_="unique"
                )
                batch_op.create_unique_constraint(
                    "uq_model_versions_name_version", ["name", "version"]
                )
            batch_op.drop_index(batch_op.f(f"ix_{table}_project_id"))
            batch_op.drop_constraint(f"fk_{table}_project_id_projects", type_="foreignkey")
            batch_op.drop_column("project_id")
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.drop_index("ix_audit_events_project_id_id")
    op.drop_table("audit_events")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_project_id"))
    op.drop_table("api_keys")
    op.drop_table("projects")

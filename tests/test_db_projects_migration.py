"""Revision 0008 on a database that holds rows from before projects (PostgreSQL and SQLite):
every row lands in the ``default`` project, and the walls hold on the migrated rows."""

from __future__ import annotations

import uuid

from sqlalchemy import MetaData, insert, select

from db import migrate, repo
from db.models import DEFAULT_PROJECT_ID
from db.session import make_engine, session_scope

pytest_plugins = ("tests.conftest_db",)

TENANT_TABLES = (
    "finetune_jobs",
    "files",
    "batches",
    "evaluations",
    "validation_runs",
    "model_versions",
)


def _rows_from_before(url: str) -> dict[str, object]:
    """One row in each tenant table, written at revision 0007 (no project anywhere)."""
    engine = make_engine(url)
    sqlite = engine.dialect.name == "sqlite"

    def uid() -> object:
        value = uuid.uuid4()
        return value.hex if sqlite else value

    tables = MetaData()
    tables.reflect(engine)
    job_id, eval_id, run_id = uid(), uid(), uid()
    with engine.begin() as conn:
        version_id = conn.execute(
            insert(tables.tables["model_versions"])
            .values(
                name="minilm-ft",
                version=1,
                base_model="minilm",
                path="/artifacts/jobs/x/model",
                weights_sha256="0" * 64,
                metrics={},
            )
            .returning(tables.tables["model_versions"].c.id)
        ).scalar_one()
        conn.execute(
            insert(tables.tables["finetune_jobs"]).values(
                id=job_id, model="minilm", params={"epochs": 1}, model_version_id=version_id
            )
        )
        conn.execute(
            insert(tables.tables["files"]).values(
                id="file-old", purpose="fine-tune", filename="t.jsonl", bytes=10, rows=1, path="/p"
            )
        )
        conn.execute(
            insert(tables.tables["batches"]).values(
                id="batch_old",
                input_file_id="file-old",
                endpoint="/v1/embeddings",
                completion_window="24h",
                status="completed",
                chunks=[[0, 1]],
                models={},
                total=1,
            )
        )
        conn.execute(
            insert(tables.tables["evaluations"]).values(
                id=eval_id,
                trigger="cli",
                status="queued",
                model_a="minilm",
                model_b="minilm",
                data_name="inline",
                n_resamples=100,
                seed=0,
                primary_metric="mrr@10",
            )
        )
        conn.execute(
            insert(tables.tables["validation_runs"]).values(
                id=run_id, trigger="cli", status="passed", models=["minilm"]
            )
        )
    engine.dispose()
    as_text = (lambda v: str(uuid.UUID(v))) if sqlite else str
    return {
        "job": as_text(job_id),
        "evaluation": as_text(eval_id),
        "run": as_text(run_id),
        "version": version_id,
    }


def test_rows_from_before_projects_land_in_the_default_project(fresh_url: str) -> None:
    migrate.upgrade(fresh_url, revision="0007")
    old = _rows_from_before(fresh_url)
    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == "0009"

    engine = make_engine(fresh_url)
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as conn:
        for name in TENANT_TABLES:
            owners = conn.execute(select(tables.tables[name].c.project_id)).scalars().all()
            assert owners == [DEFAULT_PROJECT_ID], name
        projects = conn.execute(
            select(tables.tables["projects"].c.id, tables.tables["projects"].c.name)
        ).all()
        assert [tuple(p) for p in projects] == [(DEFAULT_PROJECT_ID, "default")]
    engine.dispose()

    with session_scope(fresh_url) as session:
        team = repo.projects.create_project(session, "team-x")
        mine, theirs = repo.DEFAULT_PROJECT, repo.scope.project(team.id)
        assert repo.jobs.get_job(session, old["job"], scope=mine) is not None
        assert repo.jobs.get_job(session, old["job"], scope=theirs) is None
        assert repo.files.get_file(session, "file-old", scope=theirs) is None
        assert repo.batches.get_batch(session, "batch_old", scope=theirs) is None
        assert repo.evaluations.get_evaluation(session, old["evaluation"], scope=theirs) is None
        assert repo.validations.get_validation_run(session, old["run"], scope=theirs) is None
        assert repo.versions.latest_model_version(session, "minilm-ft", scope=theirs) is None
        # Version names are a project's own now: team-x numbers its minilm-ft from 1 too.
        version = repo.versions.register_model_version(
            session,
            name="minilm-ft",
            base_model="minilm",
            path="/artifacts/jobs/y/model",
            weights_sha256="1" * 64,
            metrics=None,
            project_id=team.id,
        )
        assert version.version == 1
        assert (
            repo.versions.latest_model_version(session, "minilm-ft", scope=mine).id
            == old["version"]
        )


def test_downgrade_from_projects_keeps_the_rows(fresh_url: str) -> None:
    migrate.upgrade(fresh_url, revision="0007")
    _rows_from_before(fresh_url)
    migrate.upgrade(fresh_url)
    migrate.downgrade(fresh_url, "0007")
    engine = make_engine(fresh_url)
    tables = MetaData()
    tables.reflect(engine)
    assert "projects" not in tables.tables
    with engine.connect() as conn:
        for name in TENANT_TABLES:
            assert "project_id" not in tables.tables[name].c, name
            assert len(conn.execute(select(tables.tables[name])).all()) == 1, name
    engine.dispose()

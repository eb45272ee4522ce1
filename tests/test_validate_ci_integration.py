"""``embedctl validate`` as CI runs it, against real workers on Redis (db 8) and PostgreSQL:
no worker for a queue, a deadline that passes, and check tasks that arrive too late."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from tests.support import (
    ROOT,
    celery_worker,
    postgres_database,
    redis_url,
    service_env,
    spawn_worker,
    stop_process,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    from db import migrate

    artifacts = tmp_path_factory.mktemp("artifacts")
    with postgres_database() as db_url:
        migrate.upgrade(db_url)
        env = service_env(db_url, redis_url(8), artifacts)
        yield {"env": env, "db_url": db_url, "artifacts": artifacts}


def validate(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "validate", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def junit_errors(path) -> list[str]:
    suite = ET.parse(path).getroot()
    assert int(suite.get("errors")) >= 1 and int(suite.get("tests")) >= 1
    return [e.get("message") for e in suite.iter("error")]


def runs(db_url: str) -> list:
    from db import repo
    from db.session import session_scope

    with session_scope(db_url) as session:
        return [
            (str(r.id), r.status, len(r.checks))
            for r in repo.validations.list_validation_runs(session, scope=repo.ALL_PROJECTS)
        ]


def test_no_worker_on_the_gpu_queue_fails_at_once_with_an_error_case(services, tmp_path):
    junit = tmp_path / "ci.xml"
    with celery_worker(services["env"], tmp_path / "cpu.log", queues="cpu"):
        started = time.monotonic()
        out = validate(services["env"], "--junit", str(junit), "--timeout", "60")
        took = time.monotonic() - started
    assert out.returncode != 0
    assert "no worker is consuming queue gpu" in out.stderr, out.stderr[-2000:]
    assert took < 30, f"waited {took:.0f} s instead of failing at once"
    assert any("no worker is consuming queue gpu" in m for m in junit_errors(junit))
    assert runs(services["db_url"]) == []  # nothing was sent or recorded


def test_validate_right_after_the_worker_starts_waits_for_it(services, tmp_path):
    """CI's recipe: `embedctl worker &` then `embedctl validate` at once, default options.
    The worker is still importing torch when validate first asks; validate keeps asking
    while the broker shows it starting (it used to ask once and fail with NoWorker)."""
    proc, log = spawn_worker(services["env"], tmp_path / "cold.log", queues="gpu,cpu")
    try:
        out = validate(services["env"], "--check", "model_loading", "--timeout", "120")
    finally:
        stop_process(proc)
        log.close()
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no worker is consuming" not in out.stderr
    assert runs(services["db_url"])[0][1] == "passed"


def test_a_passed_deadline_is_an_error_case_and_exits_quietly(services, tmp_path):
    junit = tmp_path / "ci.xml"
    with celery_worker(services["env"], tmp_path / "worker.log"):
        out = validate(services["env"], "--junit", str(junit), "--timeout", "1")
    assert out.returncode == 1
    assert any("deadline of 1 s passed" in m for m in junit_errors(junit))
    assert "Exception ignored" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert [status for _, status, _ in runs(services["db_url"])][:1] == ["error"]


def test_a_check_of_an_ended_run_does_nothing(services, tmp_path):
    from celery import Celery

    from db import repo
    from db.session import session_scope

    with session_scope(services["db_url"]) as session:
        run_id = str(
            repo.validations.create_validation_run(
                session, trigger="ci", models=["minilm"], project_id="proj_default"
            ).id
        )
        repo.validations.finish_validation_run(
            session, run_id, "error", "error: abandoned", error="abandoned"
        )
    broker = services["env"]["EMBEDDING_BROKER_URL"]
    client = Celery(broker=broker, backend=broker)
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    with celery_worker(services["env"], tmp_path / "worker.log"):
        reply = client.send_task(
            "embedding.check_model_loading", args=(run_id, ["minilm"]), queue="gpu"
        ).get(timeout=120)
    assert reply["status"] == "error" and "had already ended" in reply["reason"], reply
    with session_scope(services["db_url"]) as session:
        assert (
            repo.validations.get_validation_run(session, run_id, scope=repo.ALL_PROJECTS).checks
            == []
        )

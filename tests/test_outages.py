"""A PostgreSQL outage during a fine-tune: epoch writes wait and retry; nothing is lost.

The test runs its own cluster (initdb/pg_ctl on a spare port) and stops it for ~10 s while a
real worker trains; the shared server on 5432 is never touched.
"""

from __future__ import annotations

import time

import pytest

from tests.servers import PostgresCluster
from tests.support import celery_worker, redis_url, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRIPLETS = [
    {
        "anchor": f"def process_{i}(data): return transform(data, {i})",
        "positive": f"def handle_{i}(items): return convert(items, {i})",
        "negative": f"SELECT col_{i} FROM table_{i} WHERE id > {i}",
    }
    for i in range(24)
]


def test_postgres_outage_during_a_fine_tune(tmp_path):
    from celery import Celery

    from db import migrate, repo
    from db.session import dispose_engines, session_scope

    with PostgresCluster() as cluster:
        url = cluster.url()
        migrate.upgrade(url)
        env = service_env(url, redis_url(10), tmp_path, EMBEDDING_JOB_LEASE_S="60")
        with celery_worker(env, tmp_path / "worker.log"):
            params = {
                "triplets": TRIPLETS,
                "loss": "triplet",
                "epochs": 6,
                "lr": 2e-5,
                "batch_size": 4,
                "margin": 1.0,
            }
            with session_scope(url) as session:
                job_id = str(repo.create_job(session, "minilm", params).id)
            client = Celery(broker=env["EMBEDDING_BROKER_URL"])
            client.conf.update(task_serializer="json", accept_content=["json"])
            client.send_task("embedding.finetune", args=[job_id], queue="gpu")

            def epochs() -> list[int]:
                with session_scope(url) as session:
                    return [e.epoch for e in repo.get_job(session, job_id).epochs]

            deadline = time.monotonic() + 120
            while not epochs() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert epochs(), "no epoch recorded before the outage"
            dispose_engines()
            cluster.stop()
            cluster.wait_down()
            down_since = time.monotonic()
            time.sleep(10)
            cluster.start()
            outage = time.monotonic() - down_since
            deadline = time.monotonic() + 180
            status = None
            while time.monotonic() < deadline:
                with session_scope(url) as session:
                    job = repo.get_job(session, job_id)
                    status, recorded, error = job.status, [e.epoch for e in job.epochs], job.error
                if status in ("succeeded", "failed"):
                    break
                time.sleep(0.5)
        log = (tmp_path / "worker.log").read_text()
    assert outage >= 10
    assert status == "succeeded", (status, error, log[-3000:])
    assert recorded == [1, 2, 3, 4, 5, 6]
    assert "database unavailable" in log, "the outage should have been met and waited out"

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
                job_id = str(
                    repo.jobs.create_job(session, "minilm", params, project_id="proj_default").id
                )
            client = Celery(broker=env["EMBEDDING_BROKER_URL"])
            client.conf.update(task_serializer="json", accept_content=["json"])
            client.send_task("embedding.finetune", args=[job_id], queue="gpu")

            def epochs() -> list[int]:
                with session_scope(url) as session:
                    return [
                        e.epoch
                        for e in repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS).epochs
                    ]

            deadline = time.monotonic() + 120
            while not epochs() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert epochs(), "no epoch recorded before the outage"
            dispose_engines()
            cluster.stop()
            cluster.wait_down()
            down_since = time.monotonic()
            log_path = tmp_path / "worker.log"
            # Down for at least 10 s, and until the worker has met the outage on an epoch write.
            deadline = down_since + 180
            while time.monotonic() < deadline and not (
                time.monotonic() - down_since >= 10
                and "database unavailable" in log_path.read_text(errors="replace")
            ):
                time.sleep(0.2)
            cluster.start()
            outage = time.monotonic() - down_since
            deadline = time.monotonic() + 180
            status = None
            while time.monotonic() < deadline:
                with session_scope(url) as session:
                    job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
                    status, recorded, error = job.status, [e.epoch for e in job.epochs], job.error
                if status in ("succeeded", "failed"):
                    break
                time.sleep(0.5)
        log = (tmp_path / "worker.log").read_text()
    assert outage >= 10
    assert status == "succeeded", (status, error, log[-3000:])
    assert recorded == [1, 2, 3, 4, 5, 6]
    assert "database unavailable" in log, "the outage should have been met and waited out"


def test_redis_restart_with_jobs_queued_and_one_running(tmp_path):
    """Its own Redis with AOF: restarted while one job runs and two wait (in the database, for
    the one gpu slot); one more is submitted while it is down. Nothing is lost: all four
    finish, the running one with every epoch once."""
    import json
    import subprocess
    import sys

    from db import migrate, repo
    from db.session import session_scope
    from tests.servers import RedisServer
    from tests.support import ROOT, free_port, postgres_database

    def job_ids_status(url: str, ids: list[str]) -> dict[str, tuple[str, list[int]]]:
        with session_scope(url) as session:
            return {
                i: (
                    repo.jobs.get_job(session, i, scope=repo.ALL_PROJECTS).status,
                    [
                        e.epoch
                        for e in repo.jobs.get_job(session, i, scope=repo.ALL_PROJECTS).epochs
                    ],
                )
                for i in ids
            }

    with RedisServer() as redis, postgres_database("emb_redis") as url:
        migrate.upgrade(url)
        env = service_env(url, redis.url(), tmp_path)
        data = tmp_path / "t.jsonl"
        data.write_text(
            "\n".join(
                json.dumps(
                    {
                        "anchor": f"def p{i}(x): return x",
                        "positive": f"def h{i}(y): return y",
                        "negative": f"SELECT c{i} FROM t",
                    }
                )
                for i in range(24)
            )
            + "\n"
        )

        def submit(environment: dict, epochs: int) -> str:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "workers.cli",
                    "jobs",
                    "submit",
                    "--model",
                    "minilm",
                    "--data",
                    str(data),
                    "--epochs",
                    str(epochs),
                    "--batch-size",
                    "4",
                ],
                env=environment,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0, out.stderr[-2000:]
            return out.stdout.strip().splitlines()[-1]

        with celery_worker(env, tmp_path / "worker.log"):
            running = submit(env, 5)
            queued = [submit(env, 1), submit(env, 1)]
            deadline = time.monotonic() + 120
            while not job_ids_status(url, [running])[running][1] and time.monotonic() < deadline:
                time.sleep(0.1)
            redis.stop()
            down_env = {**env, "EMBEDDING_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
            down_env["EMBEDDING_RESULT_BACKEND"] = down_env["EMBEDDING_BROKER_URL"]
            while_down = submit(down_env, 1)  # the broker is unreachable: it waits in the outbox
            # Restart only once the worker has lost its broker connection.
            log_path = tmp_path / "worker.log"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and "Connection to broker lost" not in (
                log_path.read_text(errors="replace")
            ):
                time.sleep(0.2)
            assert "Connection to broker lost" in log_path.read_text(errors="replace")
            redis.start()
            relay = subprocess.run(
                [sys.executable, "-m", "workers.cli", "jobs", "relay"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            # A relay pass answers at once; with the one gpu slot busy it sends nothing yet:
            # the waiting jobs (two submitted before the outage, one during it) are in the
            # database, each sent in its turn as the slot comes free (workers/fleet).
            assert relay.returncode == 0 and "from the outbox" in relay.stdout, relay.stderr
            everything = [running, *queued, while_down]
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                states = job_ids_status(url, everything)
                if all(s in ("succeeded", "failed") for s, _ in states.values()):
                    break
                time.sleep(0.5)
        log = (tmp_path / "worker.log").read_text()
    assert {i: s for i, (s, _) in states.items()} == {i: "succeeded" for i in everything}, log[
        -3000:
    ]
    assert states[running][1] == [1, 2, 3, 4, 5]

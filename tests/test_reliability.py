"""Crashes and duplicates lose nothing: real worker processes, real Redis and PostgreSQL.

* A pool process SIGKILLed after epoch k: the message is redelivered (late ack,
  reject_on_worker_lost), waits out the dead worker's lease, resumes from the checkpoint
  and finishes; every epoch recorded exactly once; the final model loads.
* A job that kills its worker every time is failed after ``job_max_attempts`` claims.
* A message delivered twice (two workers) runs once: the database claim decides, and the
  duplicate's own result says it found the job done.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from tests.support import (
    celery_worker,
    pool_processes,
    postgres_database,
    redis_url,
    service_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILL_TRIALS = int(os.environ.get("KILL_TRIALS", "2"))  # kill after epoch 1, after epoch 2
TRIPLETS = [
    (
        f"def process_{i}(data): return transform(data, {i})",
        f"def handle_{i}(items): return convert(items, {i})",
        f"SELECT col_{i} FROM table_{i} WHERE id > {i}",
    )
    for i in range(24)
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from db import migrate

    artifacts = tmp_path_factory.mktemp("reliability")
    with postgres_database("emb_rel") as db_url:
        migrate.upgrade(db_url)
        env = service_env(
            db_url,
            redis_url(14),
            artifacts,
            EMBEDDING_JOB_LEASE_S="2",
            EMBEDDING_JOB_MAX_ATTEMPTS="3",
        )
        yield {"env": env, "db_url": db_url, "artifacts": artifacts}


def _submit(stack, epochs: int, key: str | None = None) -> str:
    """Record a job and send it, as workers.client does, but against the test's stack."""
    from db import repo
    from db.session import session_scope

    params = {
        "triplets": [
            dict(zip(("anchor", "positive", "negative"), t, strict=True)) for t in TRIPLETS
        ],
        "loss": "triplet",
        "epochs": epochs,
        "lr": 2e-5,
        "batch_size": 4,
        "margin": 1.0,
        "seed": 0,
    }
    with session_scope(stack["db_url"]) as session:
        job_id = str(
            repo.jobs.create_job(
                session, "minilm", params, idempotency_key=key, project_id="proj_default"
            ).id
        )
    _send(stack, job_id)
    return job_id


def _send(stack, job_id: str):
    """Send one ``embedding.finetune`` message; returns its AsyncResult (a new task id)."""
    from celery import Celery

    broker = stack["env"]["EMBEDDING_BROKER_URL"]
    client = Celery(broker=broker, backend=stack["env"]["EMBEDDING_RESULT_BACKEND"])
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    return client.send_task("embedding.finetune", args=[job_id], queue="gpu")


def _job(stack, job_id: str) -> dict:
    from db import repo
    from db.session import session_scope

    with session_scope(stack["db_url"]) as session:
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        return {
            "status": job.status,
            "attempts": job.attempts,
            "error": job.error,
            "epochs": [e.epoch for e in job.epochs],
            "heartbeat_at": job.heartbeat_at,
            "path": job.model_version.path if job.model_version else None,
            "events": [
                e.kind for e in repo.jobs.job_events(session, job_id, scope=repo.ALL_PROJECTS)
            ],
        }


def _wait(stack, job_id: str, predicate, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(stack, job_id)
        if predicate(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"timed out; job is {_job(stack, job_id)}")


@pytest.mark.parametrize("trial", range(KILL_TRIALS))
def test_worker_killed_after_an_epoch_resumes_and_finishes(stack, trial):
    from embedding.inference.encoder import Encoder

    with celery_worker(stack["env"], stack["artifacts"] / f"kill-{trial}.log") as worker:
        job_id = _submit(stack, epochs=4)
        kill_after = 1 + trial % 2  # epoch 1 or 2
        _wait(stack, job_id, lambda j: len(j["epochs"]) >= kill_after)
        for pid in pool_processes(worker):
            os.kill(pid, signal.SIGKILL)
        job = _wait(stack, job_id, lambda j: j["status"] in ("succeeded", "failed"))
    assert job["status"] == "succeeded", job
    assert job["epochs"] == [1, 2, 3, 4]  # each exactly once (unique per job and epoch)
    assert job["attempts"] == 2
    assert job["events"].count("retried") == 1, job["events"]  # the take-over says why
    vectors = Encoder.load(job["path"], device="cpu").encode(["def f(): pass"])
    assert vectors.shape == (1, 384)


def test_a_job_that_kills_its_worker_every_time_is_failed(stack):
    with celery_worker(stack["env"], stack["artifacts"] / "killer.log") as worker:
        job_id = _submit(stack, epochs=50)
        for attempt in (1, 2, 3):
            claimed = _wait(
                stack, job_id, lambda j, a=attempt: j["status"] == "running" and j["attempts"] == a
            )
            # Kill it while it runs the job: once its lease thread has beaten after the claim.
            _wait(stack, job_id, lambda j, c=claimed: j["heartbeat_at"] > c["heartbeat_at"])
            for pid in pool_processes(worker):
                os.kill(pid, signal.SIGKILL)
        job = _wait(stack, job_id, lambda j: j["status"] == "failed", timeout=120)
    assert job["attempts"] == 3
    assert "gave up after 3 attempts" in job["error"]


def test_a_message_delivered_twice_runs_once(stack):
    env = stack["env"]
    with (
        celery_worker(env, stack["artifacts"] / "dup-a.log", name=f"a-{uuid.uuid4().hex[:4]}@%h"),
        celery_worker(env, stack["artifacts"] / "dup-b.log", name=f"b-{uuid.uuid4().hex[:4]}@%h"),
    ):
        job_id = _submit(stack, epochs=3)
        _wait(stack, job_id, lambda j: j["status"] == "running")
        duplicate = _send(stack, job_id)  # the duplicate, e.g. after a visibility timeout
        _wait(stack, job_id, lambda j: j["status"] in ("succeeded", "failed"))
        # The duplicate finds the lease live, retries after it, and then finds the job done;
        # its final result says so. Only then is the job's record final.
        handled = duplicate.get(timeout=120)
        job = _job(stack, job_id)
    assert handled == {"job_id": job_id, "status": "succeeded", "duplicate": True}
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1, "the second delivery must not run the job again"
    assert job["epochs"] == [1, 2, 3]

"""Trials of the self-healing job system: real worker processes, `embedctl beat`, their own
Redis (tests.servers.RedisServer, flushed and stopped at will) and PostgreSQL.

Short leases and periods (settings env vars) keep each trial well under a minute; every
wait polls the database against a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.servers import RedisServer
from tests.support import ROOT, celery_worker, postgres_database, service_env, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEASE_S, RESCUE_EVERY_S, RESCUE_AFTER_S, RELAY_EVERY_S = 2.0, 1.0, 3.0, 1.0
TRIPLETS = [
    {
        "anchor": f"def process_{i}(data): return transform(data, {i})",
        "positive": f"def handle_{i}(items): return convert(items, {i})",
        "negative": f"SELECT col_{i} FROM table_{i} WHERE id > {i}",
    }
    for i in range(24)
]


@contextlib.contextmanager
def lifeline_stack(artifacts, prefix: str):
    """Its own Redis, a migrated PostgreSQL database, and the short lease and duty periods
    that keep a trial under a minute (tests/test_chaos.py uses it too)."""
    from db import migrate

    with RedisServer() as redis, postgres_database(prefix) as db_url:
        migrate.upgrade(db_url)
        env = service_env(
            db_url,
            redis.url(),
            artifacts,
            EMBEDDING_JOB_LEASE_S=str(LEASE_S),
            EMBEDDING_RESCUE_EVERY_S=str(RESCUE_EVERY_S),
            EMBEDDING_RESCUE_AFTER_S=str(RESCUE_AFTER_S),
            EMBEDDING_RELAY_EVERY_S=str(RELAY_EVERY_S),
            EMBEDDING_CHECKPOINT_EVERY_STEPS="2",
            EMBEDDING_BEAT_REDIS_URL=redis.url(1),
        )
        yield {"env": env, "db_url": db_url, "artifacts": artifacts, "redis": redis}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with lifeline_stack(tmp_path_factory.mktemp("lifeline"), "emb_life") as stack:
        yield stack


@contextlib.contextmanager
def beat(stack, name: str):
    log_path = stack["artifacts"] / f"{name}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "beat"],
            env=stack["env"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield log_path
        finally:
            stop_process(proc)


def _submit(stack, epochs: int, triplets=TRIPLETS, send: bool = True) -> str:
    from db import repo
    from db.session import session_scope

    params = {"triplets": triplets, "loss": "triplet", "epochs": epochs, "batch_size": 4}
    params.update(lr=2e-5, margin=1.0, seed=0)
    with session_scope(stack["db_url"]) as session:
        job_id = str(repo.jobs.create_job(session, "minilm", params, project_id="proj_default").id)
    if send:  # as workers.jobs.outbox.send does: out of the outbox first, so the relay
        # duty (every second here) never sends it too while this send is on its way
        with session_scope(stack["db_url"]) as session:
            assert repo.jobs.take_from_outbox(session, job_id)
        _client(stack).send_task("embedding.finetune", args=[job_id], task_id=job_id, queue="gpu")
        with session_scope(stack["db_url"]) as session:
            repo.jobs.add_job_event(session, job_id, "sent", "sent to the gpu queue")
    return job_id


def _client(stack):
    from celery import Celery

    client = Celery(
        broker=stack["env"]["EMBEDDING_BROKER_URL"],
        backend=stack["env"]["EMBEDDING_RESULT_BACKEND"],
    )
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    return client


def _job(stack, job_id: str) -> dict:
    from db import repo
    from db.session import session_scope

    with session_scope(stack["db_url"]) as session:
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        events = [e.kind for e in repo.jobs.job_events(session, job_id, scope=repo.ALL_PROJECTS)]
        return {
            "status": job.status,
            "error": job.error,
            "epochs": [e.epoch for e in job.epochs],
            "events": events,
            "path": job.model_version.path if job.model_version else None,
        }


def _wait(stack, job_id: str, predicate, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(stack, job_id)
        if predicate(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"timed out; job is {_job(stack, job_id)}")


def _finished(job: dict) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def _name() -> str:
    return f"w-{uuid.uuid4().hex[:6]}@%h"


def test_whole_worker_killed_in_epoch_2_and_broker_flushed_is_finished_by_a_new_worker(stack):
    """The kill alone, at random moments, is tests/test_chaos.py's; here the message is gone
    too (the broker's database flushed): nothing depended on it."""
    import redis

    from embedding.inference.encoder import Encoder

    art = stack["artifacts"]
    with beat(stack, "beat-kill-flush"):
        with celery_worker(stack["env"], art / "kill-flush-a.log", name=_name()) as worker:
            job_id = _submit(stack, epochs=3)
            _wait(stack, job_id, lambda j: j["epochs"] == [1])
            os.killpg(worker.pid, signal.SIGKILL)  # the whole worker: parent, pools, children
        redis.Redis.from_url(stack["env"]["EMBEDDING_BROKER_URL"]).flushdb()  # message gone
        killed = time.monotonic()
        with celery_worker(stack["env"], art / "kill-flush-b.log", name=_name()):
            _wait(stack, job_id, lambda j: j["events"].count("claimed") == 2, 60)
            moved_after = time.monotonic() - killed
            job = _wait(stack, job_id, _finished)
    assert job["status"] == "succeeded", job
    assert job["epochs"] == [1, 2, 3]
    assert job["events"].count("epoch") == 3  # each epoch recorded exactly once
    assert "rescued" in job["events"] and "retried" in job["events"]
    # the lease, one rescue period, and the new worker's start (model load, ~10 s here)
    assert moved_after < LEASE_S + RESCUE_EVERY_S + 30, moved_after
    assert Encoder.load(job["path"], device="cpu").encode(["def f(): pass"]).shape == (1, 384)
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(job["path"], device="cpu").encode(["x"]).shape == (1, 384)


def test_submitted_while_the_broker_is_down_runs_once_it_is_back(stack, tmp_path):
    import json

    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in TRIPLETS))
    redis = stack["redis"]
    art = stack["artifacts"]
    with celery_worker(stack["env"], art / "down.log", name=_name()), beat(stack, "beat-down"):
        redis.stop()
        asked = time.monotonic()
        out = subprocess.run(
            [
                *(sys.executable, "-m", "workers.cli", "jobs", "submit", "--model", "minilm"),
                *("--data", str(data), "--epochs", "1", "--batch-size", "4"),
            ],
            env=stack["env"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        answered_after = time.monotonic() - asked
        job_id = out.stdout.strip().splitlines()[-1]
        assert _job(stack, job_id)["events"] == ["created"]  # in the outbox, not sent
        # At once: the process's start and the broker's refusal (0.7 s), not ~19 s of
        # retries to subscribe to a result nobody waits for (workers.app.publisher)
        assert answered_after < 12, answered_after
        redis.start()
        back = time.monotonic()
        _wait(stack, job_id, lambda j: "claimed" in j["events"], timeout=60)
        waited = time.monotonic() - back
        job = _wait(stack, job_id, _finished)
    assert job["status"] == "succeeded", job
    # one relay period, plus the beat's and the worker's reconnection to the broker
    assert waited < RELAY_EVERY_S + 15, waited


def test_two_beats_send_each_duty_once_per_period(stack):
    with beat(stack, "beat-one") as one, beat(stack, "beat-two") as two:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b"embedding.relay_outbox" not in (
            one.read_bytes() + two.read_bytes()
        ):
            time.sleep(0.1)
        start = time.monotonic()
        counted_from = one.read_bytes().count(b"relay_outbox") + two.read_bytes().count(
            b"relay_outbox"
        )
        while time.monotonic() - start < 8 * RELAY_EVERY_S:
            time.sleep(0.2)
        sends = (
            one.read_bytes().count(b"relay_outbox") + two.read_bytes().count(b"relay_outbox")
        ) - counted_from
        senders = [log.name for log in (one, two) if b"Sending due task" in log.read_bytes()]
    assert senders in (["beat-one.log"], ["beat-two.log"]), senders  # one holds the lock
    assert 6 <= sends <= 9, sends  # once per period over 8 periods, not twice


def test_cancel_of_a_job_whose_worker_is_dead(stack):
    """One host of the fleet dies: the beat's rescue duty runs on the workers that remain
    (here a cpu worker), so it must cancel the dead host's job within one rescue period."""
    art = stack["artifacts"]
    survivor = celery_worker(stack["env"], art / "cancel-dead-cpu.log", queues="cpu", name=_name())
    with beat(stack, "beat-cancel-dead"), survivor:
        with celery_worker(
            stack["env"], art / "cancel-dead.log", queues="gpu", name=_name()
        ) as worker:
            job_id = _submit(stack, epochs=50)
            _wait(stack, job_id, lambda j: j["epochs"][:1] == [1])
            os.killpg(worker.pid, signal.SIGKILL)
        out = subprocess.run(
            [sys.executable, "-m", "workers.cli", "jobs", "cancel", job_id],
            env=stack["env"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        job = _wait(stack, job_id, _finished, timeout=LEASE_S + RESCUE_EVERY_S + 10)
    assert job["status"] == "cancelled", job


def test_cancel_during_the_evaluation_of_a_large_job(stack):
    big = [
        {"anchor": f"query number {i} about {i % 97}", "positive": f"answer {i}", "negative": "x"}
        for i in range(30_000)
    ]
    art = stack["artifacts"]
    with celery_worker(stack["env"], art / "cancel-eval.log", name=_name()):
        job_id = _submit(stack, epochs=1, triplets=big)
        _wait(stack, job_id, lambda j: "claimed" in j["events"], timeout=60)
        out = subprocess.run(
            [sys.executable, "-m", "workers.cli", "jobs", "cancel", job_id],
            env=stack["env"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        asked = time.monotonic()
        job = _wait(stack, job_id, _finished, timeout=60)
        took = time.monotonic() - asked
    assert job["status"] == "cancelled", job
    assert job["epochs"] == []  # it was still loading or evaluating: 30,000 rows take minutes
    assert took < 15, took


def test_finetune_request_is_answered_while_a_fine_tune_runs(stack):
    art = stack["artifacts"]
    with celery_worker(stack["env"], art / "two-pools.log", name=_name()):
        job_id = _submit(stack, epochs=20)
        _wait(stack, job_id, lambda j: len(j["epochs"]) >= 1)
        client = _client(stack)

        def request() -> dict:
            kwargs = {"model": "minilm", "triplets": TRIPLETS[:2], "epochs": 1}
            return client.send_task("embedding.finetune_request", kwargs=kwargs, queue="cpu")

        request().get(timeout=30)  # the client's own connections are set up (not timed)
        started = time.monotonic()
        reply = request().get(timeout=30)
        answered = time.monotonic() - started
        assert _job(stack, job_id)["status"] == "running"
        _client(stack).control.revoke(job_id)
        from db import repo
        from db.session import session_scope

        with session_scope(stack["db_url"]) as session:
            repo.jobs.request_cancel(session, job_id)
        _wait(stack, job_id, _finished)
    assert reply["status"] == "queued", reply
    assert answered < 1.0, answered


def test_sigterm_mid_epoch_resumes_on_another_worker_from_the_checkpoint(stack):
    art = stack["artifacts"]
    with celery_worker(stack["env"], art / "term-a.log", name=_name()) as first:
        job_id = _submit(stack, epochs=3)
        _wait(stack, job_id, lambda j: j["epochs"] == [1] and "checkpoint" in j["events"][-1:])
        os.killpg(first.pid, signal.SIGTERM)  # as `docker stop` on a process group
        stopped = _wait(stack, job_id, lambda j: "released" in j["events"], timeout=30)
        first.wait(timeout=30)
    assert stopped["status"] in ("queued", "running")
    released = time.monotonic()
    with celery_worker(stack["env"], art / "term-b.log", name=_name()):
        _wait(stack, job_id, lambda j: j["events"].count("claimed") == 2, timeout=60)
        resumed_after = time.monotonic() - released
        job = _wait(stack, job_id, _finished)
    assert job["status"] == "succeeded", job
    assert job["epochs"] == [1, 2, 3] and job["events"].count("epoch") == 3
    assert resumed_after < LEASE_S + 30, resumed_after  # no lease to wait out: worker start only


def _wait_row(read, predicate, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = read()
        if predicate(row):
            return row
        time.sleep(0.1)
    raise AssertionError(f"timed out; row is {read()}")


def test_a_compare_and_a_validation_whose_worker_is_killed_are_rescued(stack):
    """The compare task and the validation checks acked as they started: a worker killed
    mid-evaluation left the evaluation `running` for ever. Now its lease goes stale: the
    lifeline re-runs it on the next worker (its row says so), and a validation run whose
    check died with its worker is ended `error` with the reason instead of staying open."""
    import json

    from db import repo
    from db.session import session_scope

    def evaluation(eid: str) -> dict:
        with session_scope(stack["db_url"]) as session:
            row = repo.evaluations.get_evaluation(session, eid, scope=repo.ALL_PROJECTS)
            return {"status": row.status, "rescues": row.rescues or [], "error": row.error}

    pairs = stack["artifacts"] / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"query": t["anchor"], "document": t["positive"]}) + "\n" for t in TRIPLETS
        )
    )
    with session_scope(stack["db_url"]) as session:
        eid = str(
            repo.evaluations.create_evaluation(
                session, "api", "minilm", "minilm", "pairs.jsonl", 20000, 0, "mrr@10",
                dataset=str(pairs),
                project_id="proj_default",
            ).id
        )  # fmt: skip
    payload = {"model_a": "minilm", "model_b": "minilm", "dataset": str(pairs)}
    payload.update(n_resamples=20000, seed=0, evaluation_id=eid)
    art = stack["artifacts"]
    with beat(stack, "beat-compare"):
        with celery_worker(stack["env"], art / "compare-a.log", name=_name()) as worker:
            _client(stack).send_task("embedding.compare", kwargs=payload, task_id=eid, queue="gpu")
            _wait_row(lambda: evaluation(eid), lambda r: r["status"] == "running")
            os.killpg(worker.pid, signal.SIGKILL)
        # The lease expires, the lifeline re-queues it and sends it again: a new worker runs it.
        with celery_worker(stack["env"], art / "compare-b.log", name=_name()):
            row = _wait_row(
                lambda: evaluation(eid), lambda r: r["status"] in ("succeeded", "failed")
            )
    assert row["status"] == "succeeded", row
    assert [r["action"] for r in row["rescues"]] == ["rerun"], row
    assert "lease expired" in row["rescues"][0]["reason"]

    def run() -> dict:
        with session_scope(stack["db_url"]) as session:
            found = repo.validations.get_validation_run(session, run_id, scope=repo.ALL_PROJECTS)
            return {"status": found.status, "error": found.error, "beat": found.heartbeat_at}

    with beat(stack, "beat-validation"):
        with celery_worker(stack["env"], art / "check.log", name=_name()) as worker:
            # The run is recorded as its check is sent, as `embedctl validate` does: a run
            # recorded before the worker started would be older than rescue_after_s with
            # nothing sent, and the lifeline would rightly end it before the check arrives.
            with session_scope(stack["db_url"]) as session:
                run_id = str(
                    repo.validations.create_validation_run(
                        session, trigger="ci", models=["minilm"], project_id="proj_default"
                    ).id
                )
            _client(stack).send_task(
                "embedding.check_convergence", args=(run_id, "minilm"), queue="gpu"
            )
            _wait_row(run, lambda r: r["beat"] is not None)  # the check is running
            os.killpg(worker.pid, signal.SIGKILL)
        with celery_worker(stack["env"], art / "check-b.log", name=_name()):  # runs the duties
            ended = _wait_row(run, lambda r: r["status"] != "running", 60)
    assert ended["status"] == "error" and "no check of this run is running" in ended["error"]

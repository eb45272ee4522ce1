"""Fine-tune job life cycle in db/repo.py, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from db import repo
from db.models import FinetuneJob
from db.repo import InvalidValue, NotFound

pytest_plugins = ("tests.conftest_db",)

PARAMS = {"loss": "triplet", "epochs": 2, "lr": 2e-5, "batch_size": 16, "dataset": "d.jsonl"}
RACE_ROUNDS = 15

Factory = Callable[[], Session]
Rows = Callable[[str], int]


def _job(new_session: Factory, **kwargs) -> uuid.UUID:
    with new_session() as session:
        job = repo.jobs.create_job(
            session, "minilm", dict(PARAMS), **kwargs, project_id="proj_default"
        )
        session.commit()
        return job.id


def _race(new_session: Factory, attempt: Callable[[Session], object], n: int = 2) -> list:
    """Run ``attempt`` in ``n`` threads, each in its own session, released together.

    Each holds its transaction open a moment after its write, so the others' writes
    really meet an uncommitted one.
    """
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with new_session() as session:
                barrier.wait(timeout=10)
                results[i] = attempt(session)
                time.sleep(0.02)
                session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


# ------------------------------------------------------------------ create
def test_create_job_defaults(session: Session) -> None:
    job = repo.jobs.create_job(session, "minilm", PARAMS, project_id="proj_default")
    session.commit()
    assert isinstance(job.id, uuid.UUID)
    assert job.status == "queued" and job.attempts == 0 and not job.cancel_requested
    assert job.params == PARAMS and job.sent_at is None and job.idempotency_key is None
    assert job.created_at.tzinfo is not None
    assert abs(job.created_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_the_same_idempotency_key_gives_the_same_job(new_session: Factory, rows: Rows) -> None:
    first = _job(new_session, idempotency_key="nightly-1")
    with new_session() as session:
        again = repo.jobs.create_job(
            session, "qodo", {"epochs": 9}, idempotency_key="nightly-1", project_id="proj_default"
        )
        session.commit()
        assert again.id == first
        assert again.model == "minilm" and again.params == PARAMS  # the key wins
    assert _job(new_session, idempotency_key="nightly-2") != first
    _job(new_session)  # no key: a new job each time
    _job(new_session)
    assert rows("finetune_jobs") == 4


def test_concurrent_submissions_with_one_key_make_one_job(new_session: Factory, rows: Rows) -> None:
    for i in range(5):
        key = f"race-{i}"
        ids = _race(
            new_session,
            lambda s, key=key: (
                repo.jobs.create_job(s, "minilm", {}, key, project_id="proj_default").id
            ),
            n=3,
        )
        assert len(set(ids)) == 1
    assert rows("finetune_jobs") == 5


# ------------------------------------------------------------------ claim
def test_claim_a_queued_job_once(new_session: Factory) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        assert repo.jobs.claim_job(session, str(job_id), "host-a") is True
        session.commit()
        assert repo.jobs.claim_job(session, job_id, "host-b") is False
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        assert (job.status, job.attempts, job.worker) == ("running", 1, "host-a")
        assert job.started_at is not None and job.started_at.utcoffset() == timedelta(0)


def test_reclaim_a_running_job_only_when_asked(new_session: Factory) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        assert repo.jobs.claim_job(session, job_id, "host-a")
        first_start = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS).started_at
        assert not repo.jobs.claim_job(session, job_id, "host-b", allow_reclaim_running=False)
        assert repo.jobs.claim_job(session, job_id, "host-b", allow_reclaim_running=True)
        session.commit()
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        assert (job.status, job.attempts, job.worker) == ("running", 2, "host-b")
        assert job.started_at == first_start
        repo.jobs.finish_job(session, job_id, "succeeded")
        assert not repo.jobs.claim_job(session, job_id, "host-c", allow_reclaim_running=True)
        session.commit()


def _wait_until_lease_older_than(session: Session, job_id: uuid.UUID, seconds: float) -> None:
    """Poll the stored heartbeat against the clock the claim compares it with."""
    from db.models import utcnow

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        beat = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS).heartbeat_at
        session.rollback()  # the next read sees the stored row, not this transaction's snapshot
        if (utcnow() - beat).total_seconds() > seconds:
            return
        time.sleep(0.02)
    raise AssertionError(f"the lease of job {job_id} stayed younger than {seconds} s")


def test_a_live_lease_keeps_the_job_a_stale_one_lets_it_go(new_session: Factory) -> None:
    """A worker that heartbeats keeps its job; after the lease runs out another may resume it."""
    job_id = _job(new_session)
    with new_session() as session:
        assert repo.jobs.claim_job(session, job_id, "host-a")
        session.commit()
        assert repo.jobs.heartbeat(session, job_id)
        session.commit()
        assert not repo.jobs.claim_job(
            session, job_id, "host-b", allow_reclaim_running=True, stale_after_s=30
        )
        session.commit()
        _wait_until_lease_older_than(session, job_id, 0.2)
        assert repo.jobs.claim_job(
            session, job_id, "host-b", allow_reclaim_running=True, stale_after_s=0.2
        )
        session.commit()
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        assert (job.worker, job.attempts) == ("host-b", 2)
        events = [
            (e.kind, e.data) for e in repo.jobs.job_events(session, job_id, scope=repo.ALL_PROJECTS)
        ]
        assert [kind for kind, _ in events] == ["created", "claimed", "retried", "claimed"]
        retried = events[2][1]
        assert (retried["attempt"], retried["lost_worker"]) == (2, "host-a")
        assert retried["lease_age_s"] >= 0.2
        repo.jobs.finish_job(session, job_id, "succeeded")
        session.commit()
        assert not repo.jobs.heartbeat(session, job_id)  # only running jobs hold a lease


def test_claim_updates_a_job_already_loaded_in_the_session(new_session: Factory) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        assert job.status == "queued"
        assert repo.jobs.claim_job(session, job_id, "host-a")
        assert job.status == "running" and job.attempts == 1


@pytest.mark.parametrize("reclaim", [False, True], ids=["queued", "reclaim-running"])
def test_claim_race_exactly_one_wins(new_session: Factory, reclaim: bool) -> None:
    for _ in range(RACE_ROUNDS):
        job_id = _job(new_session)
        if reclaim:  # a crashed worker's job, redelivered to two workers at once
            with new_session() as session:
                assert repo.jobs.claim_job(session, job_id, "dead-host")
                session.commit()
        won = _race(
            new_session,
            lambda s, j=job_id: repo.jobs.claim_job(s, j, threading.current_thread().name, reclaim),
        )
        assert sorted(won) == [False, True]
        with new_session() as session:
            assert repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS).attempts == (
                2 if reclaim else 1
            )


def test_claim_unknown_job(session: Session) -> None:
    with pytest.raises(NotFound):
        repo.jobs.claim_job(session, uuid.uuid4(), "host")
    with pytest.raises(InvalidValue, match="job_id must be a UUID"):
        repo.jobs.claim_job(session, "not-a-uuid", "host")
    with pytest.raises(InvalidValue, match="hostname"):
        repo.jobs.claim_job(session, uuid.uuid4(), "")


# ------------------------------------------------------------------ epochs
def test_record_epoch_twice_leaves_one_row_with_the_later_values(
    new_session: Factory, rows: Rows
) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        repo.jobs.record_epoch(session, job_id, 0, 0.9, 2e-5, 10.0, 50.0, eval={"acc": 0.5})
        repo.jobs.record_epoch(session, job_id, 1, 0.7, 1e-5, 11.0, 49.0)
        session.commit()
    with new_session() as session:  # a resumed job writes epoch 1 again
        row = repo.jobs.record_epoch(
            session, str(job_id), 1, 0.6, 1.5e-5, 12.0, 48.0, eval={"acc": 0.75}
        )
        session.commit()
        assert (row.train_loss, row.lr, row.eval) == (0.6, 1.5e-5, {"acc": 0.75})
    assert rows("epoch_metrics") == 2
    with new_session() as session:
        epochs = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS).epochs
        assert [(e.epoch, e.train_loss, e.duration_s, e.samples_per_s) for e in epochs] == [
            (0, 0.9, 10.0, 50.0),
            (1, 0.6, 12.0, 48.0),
        ]
        assert epochs[0].eval == {"acc": 0.5} and epochs[1].eval == {"acc": 0.75}


def test_record_epoch_refreshes_a_loaded_job(new_session: Factory) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        assert job.epochs == []
        repo.jobs.record_epoch(session, job_id, 0, 0.5, None, None, None)
        assert [e.epoch for e in job.epochs] == [0]


def test_eval_figures_that_are_not_finite_are_stored_as_null(new_session: Factory) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        row = repo.jobs.record_epoch(
            session, job_id, 0, 0.5, 1e-5, 1.0, 1.0, eval={"mrr": math.nan, "k": (1, 2)}
        )
        session.commit()
        assert row.eval == {"mrr": None, "k": [1, 2]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 0.5), "epoch must be >= 0"),
        ((0, math.nan), "train_loss must be finite"),
        ((0, math.inf), "train_loss must be finite"),
        ((0, -math.inf), "train_loss must be finite"),
        ((1.5, 0.5), "epoch must be an integer"),
        ((0, "0.5"), "train_loss must be a number"),
        ((True, 0.5), "epoch must be an integer"),
    ],
)
def test_bad_epochs_are_refused_and_leave_no_rows(
    new_session: Factory, rows: Rows, args: tuple, message: str
) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        with pytest.raises(InvalidValue, match=message):
            repo.jobs.record_epoch(session, job_id, *args, 1e-5, 1.0, 1.0)
        session.commit()
    assert rows("epoch_metrics") == 0


def test_bad_epoch_figures_are_refused(new_session: Factory, rows: Rows) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        with pytest.raises(InvalidValue, match="lr must be finite"):
            repo.jobs.record_epoch(session, job_id, 0, 0.5, math.nan, 1.0, 1.0)
        with pytest.raises(InvalidValue, match="duration_s must be >= 0"):
            repo.jobs.record_epoch(session, job_id, 0, 0.5, 1e-5, -1.0, 1.0)
        with pytest.raises(InvalidValue, match="eval must be a JSON object"):
            repo.jobs.record_epoch(session, job_id, 0, 0.5, 1e-5, 1.0, 1.0, eval=[1, 2])
        with pytest.raises(NotFound):
            repo.jobs.record_epoch(session, uuid.uuid4(), 0, 0.5, 1e-5, 1.0, 1.0)
        session.commit()
    assert rows("epoch_metrics") == 0


# ------------------------------------------------------------------ finish, cancel, outbox
def test_finish_job_first_outcome_wins(new_session: Factory) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        repo.jobs.claim_job(session, job_id, "host")
        assert repo.jobs.finish_job(session, job_id, "failed", error="CUDA out of memory")
        assert not repo.jobs.finish_job(session, job_id, "succeeded")
        session.commit()
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        assert (job.status, job.error) == ("failed", "CUDA out of memory")
        assert job.finished_at is not None and job.finished_at >= job.started_at


def test_finish_job_with_a_model_version(new_session: Factory) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        version = repo.versions.register_model_version(
            session,
            "minilm-ft",
            "minilm",
            "/artifacts/m",
            "ab" * 32,
            {"mrr": 0.5},
            project_id="proj_default",
        )
        repo.jobs.claim_job(session, job_id, "host")
        assert repo.jobs.finish_job(session, job_id, "succeeded", model_version_id=version.id)
        session.commit()
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        assert job.status == "succeeded" and job.model_version.version == 1


@pytest.mark.parametrize("status", ["done", "running", "queued", "", None, "SUCCEEDED"])
def test_finish_job_refuses_statuses_that_are_not_final(new_session: Factory, status) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        with pytest.raises(InvalidValue, match="status"):
            repo.jobs.finish_job(session, job_id, status)
        session.commit()
        assert repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS).status == "queued"


def test_finish_unknown_job(session: Session) -> None:
    with pytest.raises(NotFound):
        repo.jobs.finish_job(session, uuid.uuid4(), "failed")


def test_cancel_request(new_session: Factory) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        assert not repo.jobs.is_cancel_requested(session, job_id)
        assert repo.jobs.request_cancel(session, str(job_id))
        session.commit()
    with new_session() as session:
        assert repo.jobs.is_cancel_requested(session, job_id)
        assert repo.jobs.finish_job(
            session, job_id, "cancelled", error="cancelled before it started"
        )
        assert not repo.jobs.request_cancel(session, job_id)  # finished: nothing left to stop
        session.commit()
        with pytest.raises(NotFound):
            repo.jobs.request_cancel(session, uuid.uuid4())
        with pytest.raises(NotFound):
            repo.jobs.is_cancel_requested(session, uuid.uuid4())


def test_outbox(new_session: Factory) -> None:
    first, second, cancelled = _job(new_session), _job(new_session), _job(new_session)
    with new_session() as session:
        repo.jobs.request_cancel(session, cancelled)
        session.commit()
        assert [j.id for j in repo.jobs.unsent_jobs(session)] == [first, second]
        assert repo.jobs.unsent_jobs(session, older_than_s=3600) == []
        assert repo.jobs.take_from_outbox(session, first)
        session.commit()
        sent_at = repo.jobs.get_job(session, first, scope=repo.ALL_PROJECTS).sent_at
        assert not repo.jobs.take_from_outbox(session, first)  # taken once; first time kept
        session.commit()
        assert repo.jobs.get_job(session, first, scope=repo.ALL_PROJECTS).sent_at == sent_at
        assert [j.id for j in repo.jobs.unsent_jobs(session)] == [second]
        # A send that failed puts it back, for the relay; a job no longer queued stays out.
        assert repo.jobs.return_to_outbox(session, first)
        session.commit()
        assert [j.id for j in repo.jobs.unsent_jobs(session)] == [first, second]
        assert repo.jobs.take_from_outbox(session, first)
        assert repo.jobs.claim_job(session, first, "w1")
        assert not repo.jobs.return_to_outbox(session, first)  # running: not the outbox's
        with pytest.raises(InvalidValue, match="older_than_s"):
            repo.jobs.unsent_jobs(session, older_than_s=-1)
        with pytest.raises(NotFound):
            repo.jobs.take_from_outbox(session, uuid.uuid4())


def test_a_job_leaves_the_outbox_once_when_its_senders_race(new_session: Factory) -> None:
    """The submitter and a relay pass that read the job as unsent a moment ago both try to
    send it: one takes it. (With the mark after the send, both sent: a duplicate message.)"""
    job_id = _job(new_session)
    won = _race(new_session, lambda session: repo.jobs.take_from_outbox(session, job_id), n=4)
    assert sorted(won) == [False, False, False, True]


def test_old_unsent_jobs(new_session: Factory) -> None:
    job_id = _job(new_session)
    with new_session() as session:
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        session.execute(
            update(FinetuneJob).where(FinetuneJob.id == job_id).values(created_at=long_ago)
        )
        session.commit()
        assert [j.id for j in repo.jobs.unsent_jobs(session, older_than_s=3600)] == [job_id]


# ------------------------------------------------------------------ reads
def test_get_and_list_jobs(new_session: Factory) -> None:
    ids = [_job(new_session) for _ in range(3)]
    with new_session() as session:
        repo.jobs.claim_job(session, ids[1], "host")
        repo.jobs.record_epoch(session, ids[1], 0, 0.5, 1e-5, 1.0, 1.0)
        session.commit()
        assert repo.jobs.get_job(session, uuid.uuid4(), scope=repo.ALL_PROJECTS) is None
        assert [j.id for j in repo.jobs.list_jobs(session, scope=repo.ALL_PROJECTS)] == ids[::-1]
        assert [
            j.id for j in repo.jobs.list_jobs(session, limit=2, scope=repo.ALL_PROJECTS)
        ] == ids[:0:-1]
        running = repo.jobs.list_jobs(session, status="running", scope=repo.ALL_PROJECTS)
        assert [j.id for j in running] == [ids[1]] and len(running[0].epochs) == 1
        assert repo.jobs.list_jobs(session, status="failed", scope=repo.ALL_PROJECTS) == []
        with pytest.raises(InvalidValue, match="unknown job status 'paused'"):
            repo.jobs.list_jobs(session, status="paused", scope=repo.ALL_PROJECTS)
        with pytest.raises(InvalidValue, match="limit"):
            repo.jobs.list_jobs(session, limit=0, scope=repo.ALL_PROJECTS)


def test_bad_job_values_are_refused_and_leave_no_rows(session: Session, rows: Rows) -> None:
    with pytest.raises(InvalidValue, match=r"params.*lr.*finite"):
        repo.jobs.create_job(session, "minilm", {"lr": math.nan}, project_id="proj_default")
    with pytest.raises(InvalidValue, match="params must be a JSON object"):
        repo.jobs.create_job(session, "minilm", [("a", "b", "c")], project_id="proj_default")
    with pytest.raises(InvalidValue, match="model must be a non-empty string"):
        repo.jobs.create_job(session, " ", {}, project_id="proj_default")
    with pytest.raises(InvalidValue, match="idempotency_key is 201 characters"):
        repo.jobs.create_job(
            session, "minilm", {}, idempotency_key="k" * 201, project_id="proj_default"
        )
    with pytest.raises(InvalidValue, match="not a JSON value"):
        repo.jobs.create_job(
            session, "minilm", {"when": datetime.now(UTC)}, project_id="proj_default"
        )
    session.commit()
    assert rows("finetune_jobs") == 0

"""A/B evaluations in db/repo.py, on both backends: from queued to an outcome, the first
outcome wins, bad values refused before any write, newest-first paging."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import repo
from db.repo import InvalidValue, NotFound

pytest_plugins = ("tests.conftest_db",)

Factory = Callable[[], Session]
Rows = Callable[[str], int]
SHA = "ab" * 32
METRICS = {"mrr@10": 0.5, "recall@1": 0.25, "ndcg@10": 0.6}
DIFFERENCES = {"mrr@10": {"b_minus_a": 0.1, "ci_low": 0.02, "ci_high": 0.18}}


def _create(session: Session, **over) -> uuid.UUID:
    args = {
        "trigger": "api",
        "model_a": "minilm",
        "model_b": "ft:minilm::0d9a4ac2-96b5-4a53-8d5c-2f5f1c1e1f6e",
        "data_name": "file-abc",
        "n_resamples": 1000,
        "seed": 0,
        "primary_metric": "mrr@10",
        **over,
    }
    return repo.evaluations.create_evaluation(session, **args, project_id="proj_default").id


def test_an_evaluation_from_queued_to_succeeded(new_session: Factory) -> None:
    with new_session() as session:
        eid = _create(session)
        session.commit()
    with new_session() as session:
        row = repo.evaluations.get_evaluation(session, str(eid), scope=repo.ALL_PROJECTS)
        assert (row.status, row.started_at, row.data_sha256) == ("queued", None, None)
        assert repo.evaluations.start_evaluation(
            session, eid, "minilm", "/artifacts/jobs/x/model", SHA, 12, None, "minilm-ft:1"
        )
        assert not repo.evaluations.start_evaluation(session, eid, "minilm", "m", SHA, 12), (
            "claimed once"
        )
        assert repo.evaluations.finish_evaluation(
            session, eid, METRICS, METRICS, DIFFERENCES, "B better", duration_s=1.5
        )
        session.commit()
    with new_session() as session:
        row = repo.evaluations.get_evaluation(session, eid, scope=repo.ALL_PROJECTS)
        assert (row.status, row.verdict, row.error) == ("succeeded", "B better", None)
        assert (row.model_b_loaded, row.model_b_version) == (
            "/artifacts/jobs/x/model",
            "minilm-ft:1",
        )
        assert (row.data_sha256, row.data_rows, row.duration_s) == (SHA, 12, 1.5)
        assert row.metrics_a == METRICS and row.differences == DIFFERENCES
        assert row.created_at <= row.started_at <= row.finished_at
        # the first outcome stands
        assert not repo.evaluations.fail_evaluation(session, eid, "late")
        assert not repo.evaluations.finish_evaluation(session, eid, {}, {}, {}, "A better")
        assert (
            repo.evaluations.get_evaluation(session, eid, scope=repo.ALL_PROJECTS).status
            == "succeeded"
        )


def test_a_failure_keeps_its_reason(new_session: Factory) -> None:
    with new_session() as session:
        queued = _create(session)
        running = _create(session)
        repo.evaluations.start_evaluation(session, running, "minilm", "minilm", SHA, 3)
        assert repo.evaluations.fail_evaluation(session, queued, "not sent: broker unavailable")
        assert repo.evaluations.fail_evaluation(session, running, "DataError: line 2: not JSON")
        session.commit()
    with new_session() as session:
        assert (
            repo.evaluations.get_evaluation(session, queued, scope=repo.ALL_PROJECTS).error
            == "not sent: broker unavailable"
        )
        failed = repo.evaluations.get_evaluation(session, running, scope=repo.ALL_PROJECTS)
        assert (failed.status, failed.verdict) == ("failed", None)
        assert not repo.evaluations.start_evaluation(session, running, "a", "b", SHA, 1), (
            "failed stays"
        )


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"trigger": "ci"}, "evaluation trigger"),
        ({"model_a": " "}, "model_a"),
        ({"model_b": "x" * 501}, "model_b"),
        ({"n_resamples": 0}, "n_resamples"),
        ({"seed": -1}, "seed"),
        ({"data_name": ""}, "data_name"),
    ],
)
def test_bad_values_are_refused_before_any_write(
    session: Session, rows: Rows, over: dict, says: str
) -> None:
    with pytest.raises(InvalidValue, match=says):
        _create(session, **over)
    assert rows("evaluations") == 0


def test_bad_outcomes_are_refused_and_the_row_is_left_as_it_was(new_session: Factory) -> None:
    with new_session() as session:
        eid = _create(session)
        with pytest.raises(InvalidValue, match="data_sha256"):
            repo.evaluations.start_evaluation(session, eid, "a", "b", "not-a-digest", 3)
        with pytest.raises(InvalidValue, match="data_rows"):
            repo.evaluations.start_evaluation(session, eid, "a", "b", SHA, 0)
        repo.evaluations.start_evaluation(session, eid, "a", "b", SHA, 3)
        with pytest.raises(InvalidValue, match="verdict"):
            repo.evaluations.finish_evaluation(
                session, eid, METRICS, METRICS, DIFFERENCES, "B wins"
            )
        with pytest.raises(InvalidValue, match="finite"):
            repo.evaluations.finish_evaluation(
                session, eid, {"mrr@10": math.nan}, METRICS, {}, "A better"
            )
        assert (
            repo.evaluations.get_evaluation(session, eid, scope=repo.ALL_PROJECTS).status
            == "running"
        )
        with pytest.raises(NotFound):
            repo.evaluations.fail_evaluation(session, uuid.uuid4(), "x")
        with pytest.raises(InvalidValue, match="UUID"):
            repo.evaluations.get_evaluation(session, "eval-1", scope=repo.ALL_PROJECTS)


def test_the_table_refuses_an_unknown_verdict_from_any_writer(session: Session) -> None:
    eid = _create(session)
    session.flush()
    with pytest.raises(IntegrityError):
        session.execute(
            text("UPDATE evaluations SET verdict = 'B wins' WHERE id = :id"),
            {"id": eid.hex if session.get_bind().dialect.name == "sqlite" else eid},
        )


def test_listing_is_newest_first_with_a_cursor(new_session: Factory) -> None:
    with new_session() as session:
        ids = [_create(session, data_name=f"file-{i}") for i in range(5)]
        repo.evaluations.fail_evaluation(session, ids[0], "x")
        session.commit()
    with new_session() as session:
        first = repo.evaluations.list_evaluations(session, limit=2, scope=repo.ALL_PROJECTS)
        assert [e.id for e in first] == ids[::-1][:2]
        rest = repo.evaluations.list_evaluations(
            session, after=first[-1].id, limit=10, scope=repo.ALL_PROJECTS
        )
        assert [e.id for e in rest] == ids[::-1][2:]
        assert [
            e.id
            for e in repo.evaluations.list_evaluations(
                session, status="failed", scope=repo.ALL_PROJECTS
            )
        ] == [ids[0]]
        with pytest.raises(NotFound):
            repo.evaluations.list_evaluations(session, after=uuid.uuid4(), scope=repo.ALL_PROJECTS)


def test_lost_running_evaluations_are_failed_once(new_session: Factory) -> None:
    from datetime import timedelta

    from db.models import utcnow

    with new_session() as session:
        old, fresh, queued = _create(session), _create(session), _create(session)
        for eid in (old, fresh):
            assert repo.evaluations.start_evaluation(session, eid, "minilm", "m", SHA, 12)
        session.commit()
    with new_session() as session:
        repo.evaluations.get_evaluation(session, old, scope=repo.ALL_PROJECTS).started_at = (
            utcnow() - timedelta(hours=1)
        )
        session.commit()
    cutoff = utcnow() - timedelta(minutes=30)
    with new_session() as session:
        assert repo.evaluations.fail_lost_evaluations(session, cutoff, "lost: worker killed") == [
            str(old)
        ]
        assert repo.evaluations.fail_lost_evaluations(session, cutoff, "lost: worker killed") == []
        session.commit()
    with new_session() as session:
        statuses = {
            eid: repo.evaluations.get_evaluation(session, eid, scope=repo.ALL_PROJECTS)
            for eid in (old, fresh, queued)
        }
        assert (statuses[old].status, statuses[old].error) == ("failed", "lost: worker killed")
        assert statuses[old].finished_at is not None
        assert statuses[fresh].status == "running" and statuses[queued].status == "queued"

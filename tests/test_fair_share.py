"""Fair share's order (a pure function) and the GPU time it is fed, charged once per attempt
(the repo, on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from db import repo
from db.models import FinetuneJob, utcnow
from workers.fleet.fair_share import Project, pick

pytest_plugins = ("tests.conftest_db",)


def project(weight=1.0, used=0.0, quota=None, in_flight=0) -> Project:
    return Project(weight=weight, max_running_jobs=quota, used_s=used, in_flight=in_flight)


def test_a_project_alone_runs_first_in_first_out():
    waiting = [("a1", "A"), ("a2", "A"), ("a3", "A")]
    assert pick(waiting, {"A": project(used=100.0)}) == "a1"


def test_the_project_that_used_least_of_its_share_goes_next():
    waiting = [("a2", "A"), ("a3", "A"), ("b1", "B")]  # A's are older
    assert pick(waiting, {"A": project(used=10.0), "B": project(used=0.0)}) == "b1"
    # Twice the weight: 10 s of use is 5 s per share, less than B's 6.
    assert pick(waiting, {"A": project(weight=2, used=10.0), "B": project(used=6.0)}) == "a2"


def test_ties_go_to_the_older_job():
    waiting = [("b1", "B"), ("a1", "A")]
    assert pick(waiting, {"A": project(), "B": project()}) == "b1"


def test_a_project_at_its_running_quota_is_passed_over_not_refused():
    waiting = [("a2", "A"), ("b1", "B")]
    projects = {"A": project(quota=1, in_flight=1), "B": project(used=1e6)}
    assert pick(waiting, projects) == "b1"
    assert pick([("a2", "A")], projects) is None  # it waits


def test_weights_two_to_one_give_two_turns_to_one():
    """Simulated: equal jobs of 1 s each, both projects always waiting."""
    used = {"A": 0.0, "B": 0.0}
    weights = {"A": 2.0, "B": 1.0}
    order = []
    queue = [(f"a{i}", "A") for i in range(30)] + [(f"b{i}", "B") for i in range(30)]
    for _ in range(30):
        chosen = pick(queue, {p: project(weights[p], used[p]) for p in used})
        owner = dict(queue)[chosen]
        queue = [q for q in queue if q[0] != chosen]
        used[owner] += 1.0
        order.append(owner)
    assert order.count("A") == 20 and order.count("B") == 10


# ------------------------------------------------------------------ GPU time, charged once
def _job(session, project_id="proj_default"):
    return repo.jobs.create_job(session, "minilm", {"epochs": 1}, project_id=project_id).id


def _age(session, job_id, claimed_s_ago, beat_s_ago):
    now = utcnow()
    session.execute(
        update(FinetuneJob)
        .where(FinetuneJob.id == job_id)
        .values(
            claimed_at=now - timedelta(seconds=claimed_s_ago),
            heartbeat_at=now - timedelta(seconds=beat_s_ago),
        )
    )
    session.expire_all()


def test_an_attempt_is_charged_once_from_its_claim_to_its_end(session):
    job_id = _job(session)
    assert repo.jobs.claim_job(session, job_id, "w1")
    _age(session, job_id, claimed_s_ago=40, beat_s_ago=0)
    assert repo.jobs.finish_job(session, job_id, "succeeded")
    assert not repo.jobs.finish_job(session, job_id, "failed")  # a late repeat: nothing more
    used = repo.usage.totals(session)["proj_default"]["gpu_seconds_training"]
    assert 40 <= used < 45


def test_a_lost_attempt_is_charged_to_its_last_lease_and_the_takeover_from_its_own_claim(
    session,
):
    job_id = _job(session)
    assert repo.jobs.claim_job(session, job_id, "w1")
    _age(session, job_id, claimed_s_ago=100, beat_s_ago=70)  # w1 died 70 s ago, after 30 s
    assert repo.jobs.mark_rescued(session, job_id, "its lease expired")
    assert repo.jobs.fleet_state(session)["waiting"] == [(str(job_id), "proj_default")]
    assert repo.jobs.take_from_outbox(session, job_id)
    assert repo.jobs.claim_job(session, job_id, "w2", allow_reclaim_running=True, stale_after_s=60)
    lost = repo.usage.totals(session)["proj_default"]["gpu_seconds_training"]
    assert 29 <= lost <= 31  # the lost attempt: its claim to its last lease, not to now
    _age(session, job_id, claimed_s_ago=20, beat_s_ago=0)
    assert repo.jobs.finish_job(session, job_id, "succeeded")
    total = repo.usage.totals(session)["proj_default"]["gpu_seconds_training"]
    assert 49 <= total < 55  # 30 + 20: each interval once


def test_the_fleet_state_counts_what_is_in_flight_per_project(session):
    team = repo.projects.create_project(session, "team-f")
    sent, running, waiting = _job(session), _job(session, team.id), _job(session, team.id)
    assert repo.jobs.take_from_outbox(session, sent)
    assert repo.jobs.take_from_outbox(session, running)
    assert repo.jobs.claim_job(session, running, "w1")
    state = repo.jobs.fleet_state(session)
    assert state["waiting"] == [(str(waiting), team.id)]
    assert state["in_flight"] == {"proj_default": 1, team.id: 1}
    assert set(state["running_s"]) == {team.id}
    repo.jobs.request_cancel(session, waiting)
    assert repo.jobs.fleet_state(session)["waiting"] == []  # cancelled: never sent

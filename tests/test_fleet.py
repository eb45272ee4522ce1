"""One GPU fleet shared by projects, end to end: real Redis, PostgreSQL and worker processes.

A burst of one project's jobs no longer holds the GPU: the next slot goes to the project
that has used least of its share (the jobs wait in the database, the dispatcher sends them);
weights split the GPU time; a running-jobs quota keeps a project's next job queued while
another project's job runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from embedding.data.examples import SEED_TRIPLETS
from tests.support import ROOT, celery_worker, postgres_database, redis_url, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 4  # no other test uses it
ROWS = [{"anchor": a, "positive": p, "negative": n} for a, p, n in SEED_TRIPLETS]
SUBMIT = """
import json, sys
from workers.client import submit_finetune
rows, plan = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ids = [
    submit_finetune("minilm", triplets=rows, loss="triplet", project=project, **{"batch_size": 5, **hp})
    for project, hp in plan
]
print(json.dumps(ids))
"""


def cli(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def submit(env, plan: list[tuple[str, dict]]) -> list[str]:
    """Submit jobs in this order from one client process (``workers.client``)."""
    out = subprocess.run(
        [sys.executable, "-c", SUBMIT, json.dumps(ROWS), json.dumps(plan)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def jobs(db_url: str, ids: list[str]) -> dict[str, SimpleNamespace]:
    from db import repo
    from db.session import session_scope

    with session_scope(db_url) as session:
        found = {}
        for job_id in ids:
            job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
            found[job_id] = SimpleNamespace(
                status=job.status,
                project=job.project_id,
                started=job.started_at,
                finished=job.finished_at,
                sent=job.sent_at,
            )
        return found


def wait_for(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def all_ended(db_url: str, ids: list[str], seconds: float = 600):
    def ended() -> dict | None:
        found = jobs(db_url, ids)
        final = ("succeeded", "failed", "cancelled")
        return found if all(j.status in final for j in found.values()) else None

    return wait_for(ended, seconds, f"{len(ids)} jobs to end")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from db import migrate

    tmp = tmp_path_factory.mktemp("fleet")
    artifacts = tmp / "artifacts"
    artifacts.mkdir()
    with postgres_database("emb_fleet") as db_url:
        migrate.upgrade(db_url)
        env = service_env(db_url, redis_url(REDIS_DB), artifacts, TOKENIZERS_PARALLELISM="false")
        for name in ("team-a", "team-b", "heavy", "light", "capped", "other"):
            out = cli(env, "projects", "create", name)
            assert out.returncode == 0, out.stderr
        yield SimpleNamespace(db_url=db_url, env=env, tmp=tmp)


def test_a_burst_of_one_project_does_not_hold_the_gpu(fleet):
    """One gpu slot: A submits six fine-tunes, then B one; B's finishes before A's third."""
    with celery_worker(fleet.env, fleet.tmp / "worker1.log", queues="gpu,cpu"):
        plan = [("team-a", {"epochs": 1})] * 6 + [("team-b", {"epochs": 1})]
        ids = submit(fleet.env, plan)
        found = all_ended(fleet.db_url, ids)
    assert all(j.status == "succeeded" for j in found.values()), found
    a_finished = sorted(found[i].finished for i in ids[:6])
    b_finished = found[ids[6]].finished
    assert b_finished < a_finished[2], (b_finished, a_finished)
    # The waiting jobs were held in the database, not queued in the broker ahead of B's:
    # each was sent only when the slot before it came free.
    sent = sorted((found[i].sent, i) for i in ids)
    assert [i for _, i in sent][:2] == [ids[0], ids[6]]

    usage = json.loads(cli(fleet.env, "usage", "--json").stdout)
    trained = {row["project"]: row["gpu_seconds_training"] for row in usage}
    assert trained["team-a"] > trained["team-b"] > 0
    assert {row["project"]: row["pairs_trained"] for row in usage}["team-b"] == len(ROWS)


def test_weights_split_the_gpu_time_two_to_one(fleet):
    """Weights 2:1, both projects always waiting: while both wait, the GPU-seconds each got
    split within 20 % of 2:1."""
    for name, weight in (("heavy", "2"), ("light", "1")):
        out = cli(fleet.env, "projects", "set-limits", name, "--weight", weight)
        assert out.returncode == 0, out.stderr
    with celery_worker(fleet.env, fleet.tmp / "worker2.log", queues="gpu,cpu"):
        # 15 each: the contended period ends on a whole job, so its split can miss 2:1 by up
        # to one job's share (1.57 was read once with 9 each); with 15 it stays >= ~1.75.
        plan = [("heavy", {"epochs": 1})] * 15 + [("light", {"epochs": 1})] * 15
        ids = submit(fleet.env, plan)
        found = all_ended(fleet.db_url, ids)
    assert all(j.status == "succeeded" for j in found.values()), found
    by_start = sorted(found.values(), key=lambda j: j.started)
    contended = []  # until one project has no job left waiting
    left = {"heavy": 15, "light": 15}
    names = {found[ids[0]].project: "heavy", found[ids[-1]].project: "light"}
    for job in by_start:
        if min(left.values()) == 0:
            break
        contended.append(job)
        left[names[job.project]] -= 1
    seconds = {"heavy": 0.0, "light": 0.0}
    for job in contended:
        seconds[names[job.project]] += (job.finished - job.started).total_seconds()
    ratio = seconds["heavy"] / seconds["light"]
    print(f"contended jobs {len(contended)}, GPU-s {seconds}, heavy/light {ratio:.2f}")
    assert 1.6 <= ratio <= 2.4, seconds


def test_a_running_jobs_quota_keeps_the_next_job_queued_while_another_project_runs(fleet):
    """Two gpu slots; 'capped' may run one job at a time: its second waits, queued and never
    sent, while its first and the other project's job both run."""
    out = cli(fleet.env, "projects", "set-limits", "capped", "--max-running-jobs", "1")
    assert out.returncode == 0, out.stderr
    env = {**fleet.env, "EMBEDDING_GPUS": "cpu:0,cpu:1", "EMBEDDING_FLEET_GPU_SLOTS": "2"}
    long = {"epochs": 300, "batch_size": 1}
    with celery_worker(env, fleet.tmp / "worker3.log", queues="gpu,cpu", concurrency=None):
        first, second, other = submit(env, [("capped", long), ("capped", long), ("other", long)])

        def both_running() -> dict | None:
            found = jobs(fleet.db_url, [first, second, other])
            return found if found[first].status == found[other].status == "running" else None

        both = wait_for(
            both_running, 180, "the capped project's first job and the other project's to run"
        )
        assert both[second].status == "queued" and both[second].sent is None
        # A quota lifted while the job waits holds from the next dispatch: when the other
        # project's job ends and frees its slot, the capped project's second job takes it.
        lifted = cli(env, "projects", "set-limits", "capped", "--max-running-jobs", "none")
        assert lifted.returncode == 0, lifted.stderr
        assert cli(env, "jobs", "cancel", other).returncode == 0
        wait_for(
            lambda: jobs(fleet.db_url, [second])[second].sent is not None,
            120,
            "the second job to be sent into the freed slot once the quota is lifted",
        )
        for job_id in (first, second, other):
            assert cli(env, "jobs", "cancel", job_id).returncode == 0
        all_ended(fleet.db_url, [first, second, other], seconds=180)

"""A fine-tune job on several devices of one host (``n_devices``): asked in the payload, the
API and the CLI; counted as that many gpu slots by the fleet's dispatcher; run as a
data-parallel group by the gpu child that takes it, whose host's other children take no job
meanwhile; a rank that dies ends the attempt and the job resumes from its checkpoint.

The end-to-end tests run a real worker told it has two devices (``cpu:0,cpu:1``) whose
groups are gloo ranks, on real Redis and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import time
from types import SimpleNamespace

import pytest

from db import repo
from tests.support import celery_worker
from workers.fleet.capacity import slots_of
from workers.schemas import FinetuneRequest

pytest_plugins = ("tests.conftest_db",)

PAIR = {"anchor": "def add(a, b): return a + b", "positive": "add two numbers"}


def test_a_job_asks_for_devices_in_its_payload():
    request = FinetuneRequest.model_validate({"model": "minilm", "pairs": [PAIR]})
    assert request.n_devices is None and request.devices_asked() == 1  # unset: one
    assert "n_devices" not in request.model_dump(exclude_none=True)  # old digests unchanged
    for asked in (2, "all"):
        request = FinetuneRequest.model_validate(
            {"model": "m", "pairs": [PAIR], "n_devices": asked}
        )
        assert request.devices_asked() == asked
    for bad in (0, -1, 65, "two", True, 1.5):
        with pytest.raises(ValueError):
            FinetuneRequest.model_validate({"model": "m", "pairs": [PAIR], "n_devices": bad})


def test_a_job_holds_as_many_gpu_slots_as_devices_it_asks():
    assert slots_of(None, 4) == 1
    assert slots_of(1, 4) == 1
    assert slots_of(3, 4) == 3
    assert slots_of("all", 8, host=4) == 4  # the largest host, not the whole fleet
    assert slots_of("all", 2) == 2
    assert slots_of(6, 4) == 4  # more than the fleet: sent once the whole fleet is free


def test_the_fleet_state_reads_each_jobs_devices(session):
    def job(params: dict) -> str:
        return str(
            repo.jobs.create_job(
                session, "minilm", {"epochs": 1, **params}, project_id="proj_default"
            ).id
        )

    one, pair, everything, waiting = (
        job({}),
        job({"n_devices": 2}),
        job({"n_devices": "all"}),
        job({"n_devices": 2, "pairs": [PAIR] * 50}),
    )
    for sent in (one, pair, everything):
        assert repo.jobs.take_from_outbox(session, sent)
    state = repo.jobs.fleet_state(session)
    assert sorted(state["in_flight_devices"], key=str) == sorted([None, 2, "all"], key=str)
    assert state["devices"] == {waiting: 2}


def test_the_api_takes_n_devices_in_hyperparameters_or_beside_them():
    from api.errors import APIError
    from api.routes.fine_tuning import _payload
    from api.schemas import FineTuningJobRequest

    def payload(**body):
        request = FineTuningJobRequest.model_validate(
            {"model": "minilm", "training_file": "file-1", **body}
        )
        return _payload(request, "/data/train.jsonl", None)

    assert "n_devices" not in payload()
    assert payload(n_devices=2)["n_devices"] == 2
    assert payload(hyperparameters={"n_devices": "all"})["n_devices"] == "all"
    assert payload(n_devices=2, hyperparameters={"n_devices": 2})["n_devices"] == 2
    with pytest.raises(APIError):
        payload(n_devices=2, hyperparameters={"n_devices": 4})


def test_jobs_submit_takes_devices():
    import argparse

    from workers.cli.jobs import add_submit_options

    parser = argparse.ArgumentParser()
    add_submit_options(parser)
    base = ["--model", "minilm", "--data", "x.jsonl"]
    assert parser.parse_args(base).devices is None
    assert parser.parse_args([*base, "--devices", "2"]).devices == 2
    assert parser.parse_args([*base, "--devices", "all"]).devices == "all"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--devices", "two"])


def test_a_killed_rank_is_told_apart_from_its_peers_echo():
    import signal as signals

    from embedding.training.distributed import RankDied, _rank_failure

    echo = RuntimeError("Connection closed by peer")  # rank 0, mid all-reduce
    # rank 1 SIGKILLed, rank 0 raised the echo and exited 1: the group ended by rank 1
    died = _rank_failure([(0, echo)], RuntimeError("process 0"), [1, -signals.SIGKILL])
    assert isinstance(died, RankDied) and "rank 1" in str(died) and "signal 9" in str(died)
    # a rank's own exception stays its own (the rest were ended with SIGTERM)
    own = ValueError("bad rows")
    failed = SimpleNamespace(error_index=1)
    assert _rank_failure([(1, own)], failed, [-signals.SIGTERM, 1]) is own  # type: ignore[arg-type]


# ------------------------------------------------------------------ end to end
SUBMIT = """
import json, sys
from workers.client import submit_finetune
rows, plan = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps([
    submit_finetune("minilm", triplets=rows, loss="triplet", batch_size=4, seed=0, **hp)
    for hp in plan
]))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """PostgreSQL, Redis, the lifeline's short lease and periods (tests/test_lifeline.py),
    and one worker told it has two devices: a gpu pool of two children, cpu:0 and cpu:1."""
    from tests.test_lifeline import lifeline_stack

    tmp = tmp_path_factory.mktemp("groups")
    with lifeline_stack(tmp, "emb_groups") as found:
        env = {**found["env"], "EMBEDDING_GPUS": "cpu:0,cpu:1", "EMBEDDING_WARM_UP": "0"}
        log_path = tmp / "worker.log"
        with celery_worker(env, log_path, queues="gpu", name="groups@%h", concurrency=None) as w:
            assert "gpu pool of 2" in log_path.read_text()
            yield SimpleNamespace(**{**found, "env": env, "worker": w, "log": log_path})


def _submit(stack, plan: list[dict]) -> list[str]:
    import subprocess
    import sys

    from tests.support import ROOT
    from tests.test_lifeline import TRIPLETS

    out = subprocess.run(
        [sys.executable, "-c", SUBMIT, json.dumps(TRIPLETS), json.dumps(plan)],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _job(stack, job_id: str) -> SimpleNamespace:
    from db.session import session_scope

    with session_scope(stack.db_url) as session:
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        events = repo.jobs.job_events(session, job_id, scope=repo.ALL_PROJECTS)
        return SimpleNamespace(
            status=job.status,
            error=job.error,
            sent=job.sent_at,
            finished=job.finished_at,
            result=job.result,
            epochs=sorted(e.epoch for e in job.epochs),
            events=[(e.kind, e.message, e.data, e.at) for e in events],
        )


def _poll(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _ended(job: SimpleNamespace) -> bool:
    return job.status in ("succeeded", "failed", "cancelled")


def _until_ended(stack, job_id: str, seconds: float) -> SimpleNamespace:
    return _poll(lambda: _ended(j := _job(stack, job_id)) and j, seconds, f"job {job_id} to end")


def _epoch_events(job: SimpleNamespace) -> list[int]:
    return sorted(data["epoch"] for kind, _, data, _ in job.events if kind == "epoch")


@pytest.mark.integration
@pytest.mark.slow
def test_a_two_device_job_runs_as_a_group_and_the_other_child_takes_no_job(stack):
    from celery import Celery

    group_id, single_id = _submit(stack, [{"epochs": 2, "n_devices": 2}, {"epochs": 1}])
    running = _poll(
        lambda: (j := _job(stack, group_id)).status == "running" and j, 120, "the group job"
    )
    single = _job(stack, single_id)
    assert single.sent is None and single.status == "queued", single  # 2 slots, both held
    # A task sent straight to the gpu queue reaches the idle child, which waits for its
    # device: the group holds it.
    client = Celery("t", broker=stack.env["EMBEDDING_BROKER_URL"])
    client.conf.result_backend = stack.env["EMBEDDING_RESULT_BACKEND"]
    _poll(lambda: any(k == "checkpoint" for k, *_ in _job(stack, group_id).events), 300, "a ckpt")
    probe = client.send_task("embedding.worker_device", kwargs={"hold_s": 0}, queue="gpu")
    while not _ended(running := _job(stack, group_id)):
        assert _job(stack, single_id).sent is None  # never sent while the group runs
        time.sleep(0.2)
    assert running.status == "succeeded", running.error
    assert running.result["world_size"] == 2, running.result
    checkpoints = [data for kind, _, data, _ in running.events if kind == "checkpoint"]
    assert checkpoints and all(c["world_size"] == 2 for c in checkpoints), checkpoints
    assert _epoch_events(running) == [1, 2]
    last_epoch = max(at for kind, _, _, at in running.events if kind == "epoch")
    reply = probe.get(timeout=120)
    assert reply["started_at"] > last_epoch.timestamp(), (reply, last_epoch)

    single = _until_ended(stack, single_id, 300)
    assert single.status == "succeeded", single.error
    assert single.result["world_size"] == 1
    assert single.sent >= running.finished  # sent when the group's slots came free


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_rank_ends_the_attempt_and_the_job_resumes_from_its_checkpoint(stack):
    import psutil

    from tests.test_lifeline import beat

    with beat(stack.__dict__, "beat-groups"):
        (job_id,) = _submit(stack, [{"epochs": 3, "n_devices": 2}])
        _poll(lambda: 1 in _job(stack, job_id).epochs, 300, "epoch 1")

        def ranks() -> list[psutil.Process]:
            found = psutil.Process(stack.worker.pid).children(recursive=True)
            return [p for p in found if "spawn_main" in " ".join(p.cmdline())]

        pair = _poll(lambda: len(r := ranks()) == 2 and r, 30, "two ranks")
        victim = max(pair, key=lambda p: (p.create_time(), p.pid))  # rank 1, spawned second
        os.kill(victim.pid, signal.SIGKILL)

        job = _until_ended(stack, job_id, 600)
    assert job.status == "succeeded", (job.error, [e[:2] for e in job.events])
    kinds = [kind for kind, *_ in job.events]
    released = [m for kind, m, *_ in job.events if kind == "released"]
    assert released and "data-parallel group ended" in released[0], released
    assert "rank 1" in released[0] and "signal 9" in released[0], released
    assert kinds.count("claimed") == 2, kinds  # the retry is a second attempt
    assert job.epochs == [1, 2, 3]
    assert _epoch_events(job) == [1, 2, 3]  # each epoch once: the retry resumed after epoch 1
    resumed = [data for kind, _, data, _ in job.events if kind == "claimed"][-1]
    assert resumed["attempt"] == 2
    assert job.result["world_size"] == 2

"""The outbox sends each job once: its submitter and a relay pass that raced it put one message
on the real Redis queue, and a send the broker refuses leaves the job in the outbox.

Before the job was taken out of the outbox ahead of its send, a submit whose send outlasted
the relay's one-second grace went out twice; the worker's claim kept the job from running
twice, but the duplicate bounced between workers every lease period while the job ran, and
once (CI, `test_chaos`) it was the message that took a killed worker's job over before any
rescue pass could.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from db import migrate
from tests.support import ROOT, free_port, redis_url, service_env

pytestmark = pytest.mark.integration

REDIS_DB = 7  # no other test uses it

# In a process of its own: the settings (broker, database) are read once a process.
RACE = """
import json
from db import repo
from db.session import session_scope
from workers.jobs import outbox

params = {"triplets": [["a", "b", "c"]], "loss": "triplet", "epochs": 1}
with session_scope() as session:
    job_id = str(repo.jobs.create_job(session, "minilm", params, project_id="proj_default").id)
# A relay pass reads the outbox ...
with session_scope() as session:
    pending = [str(job.id) for job in repo.jobs.unsent_jobs(session)]
# ... the submitter sends meanwhile ...
by_submitter = outbox.send(job_id)
# ... and the relay pass sends what it read.
by_relay = [outbox.send(pending_id) for pending_id in pending]
with session_scope() as session:
    events = [e.kind for e in repo.jobs.job_events(session, job_id, scope=repo.ALL_PROJECTS)]
    sent = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS).sent_at is not None
print(json.dumps({"job_id": job_id, "submitter": by_submitter, "relay": by_relay,
                  "events": events, "sent": sent}))
"""


def _run(env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", RACE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _database(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    migrate.upgrade(url)
    return url


def test_a_submit_and_the_relay_pass_that_raced_it_send_one_message(tmp_path):
    import redis

    broker = redis_url(REDIS_DB)
    said = _run(service_env(_database(tmp_path), broker, tmp_path))
    assert said["submitter"] is True and said["relay"] == [False], said
    assert said["events"] == ["created", "sent"] and said["sent"], said
    client = redis.Redis.from_url(broker)
    try:
        messages = client.lrange("gpu", 0, -1)
    finally:
        client.close()
    assert len(messages) == 1, messages  # one message, not one per sender
    assert said["job_id"] in messages[0].decode()


def test_a_send_the_broker_refuses_leaves_the_job_in_the_outbox(tmp_path):
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    said = _run(service_env(_database(tmp_path), closed, tmp_path))
    assert said["submitter"] is False and said["relay"] == [False], said
    # Back in the outbox, for the next relay pass: not marked sent, no "sent" event.
    assert said["events"] == ["created"] and not said["sent"], said

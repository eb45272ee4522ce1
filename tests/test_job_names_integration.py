"""Fine-tuned models by name, idempotency conflicts, submit-time checks and Celery-only
clients (issue 15), against a real worker on Redis (db 9) and PostgreSQL.

The worker runs with the default model roots (no ``EMBEDDING_MODEL_ROOTS``): the artifacts
directory, wherever its working directory is.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.support import (
    ALL_QUEUES,
    ROOT,
    celery_worker,
    free_port,
    postgres_database,
    redis_url,
    service_env,
    stop_process,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRIPLETS = [
    {"anchor": f"def process_{i}(x)", "positive": f"def handle_{i}(y)", "negative": "SELECT 1"}
    for i in range(4)
]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    from db import migrate

    artifacts = tmp_path_factory.mktemp("artifacts")
    with postgres_database() as db_url:
        migrate.upgrade(db_url)
        broker = redis_url(9)
        env = service_env(db_url, broker, artifacts)
        del env["EMBEDDING_MODEL_ROOTS"]  # the default: the artifacts directory
        with celery_worker(env, artifacts / "worker.log", queues=ALL_QUEUES) as proc:
            yield {
                "env": env,
                "db_url": db_url,
                "broker": broker,
                "artifacts": artifacts,
                "proc": proc,
            }


def plain(broker: str):
    from celery import Celery

    client = Celery(broker=broker, backend=broker)
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    return client


def call(system, task: str, queue: str = "cpu", **kwargs):
    return plain(system["broker"]).send_task(task, kwargs=kwargs, queue=queue).get(timeout=120)


def wait_status(system, job_id: str, until: tuple[str, ...], timeout: float = 240) -> dict:
    """Follow a job through ``embedding.job_status``, as a client with only Celery does."""
    deadline = time.monotonic() + timeout
    while True:
        job = call(system, "embedding.job_status", job_id=job_id)
        if job["status"] in until or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def job_count(db_url: str) -> int:
    from db import repo
    from db.session import session_scope

    with session_scope(db_url) as session:
        return len(repo.jobs.list_jobs(session, limit=1000, scope=repo.ALL_PROJECTS))


@pytest.fixture(scope="module")
def billing_job(system):
    reply = call(
        system,
        "embedding.finetune_request",
        model="minilm",
        triplets=TRIPLETS,
        epochs=1,
        batch_size=4,
        suffix="billing",
        idempotency_key="names-1",
    )
    assert reply["status"] == "queued", reply
    job = wait_status(system, reply["job_id"], ("succeeded", "failed"))
    assert job["status"] == "succeeded", job
    return job


def embed_on_worker(system, model: str) -> np.ndarray:
    reply = call(
        system, "embedding.embed", queue="gpu", texts=["def f(): return 1", "SELECT 1"], model=model
    )
    assert "vectors" in reply, reply
    return np.asarray(reply["vectors"], dtype=np.float32)


def embed_on_cli(system, model: str) -> np.ndarray:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "embed",
            "--model",
            model,
            "def f(): return 1",
            "SELECT 1",
        ],
        env=system["env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return np.asarray(json.loads(out.stdout), dtype=np.float32)


def test_a_version_is_usable_by_every_one_of_its_names(system, billing_job):
    job_id = billing_job["id"]
    assert billing_job["model_version"] == "minilm-billing:1"
    assert billing_job["fine_tuned_model"] == f"ft:minilm:billing:{job_id}"
    names = ["minilm-billing", "minilm-billing:1", f"ft:minilm:billing:{job_id}", job_id]
    reference = embed_on_worker(system, names[0])
    base = embed_on_worker(system, "minilm")
    assert not np.allclose(reference, base, atol=1e-4), "the version's own weights are used"
    for name in names:
        np.testing.assert_allclose(embed_on_worker(system, name), reference, atol=1e-6)
        np.testing.assert_allclose(embed_on_cli(system, name), reference, atol=1e-5)
    for wrong in ["minilm-billing:2", f"ft:minilm:other:{job_id}", "minilm-nothing"]:
        with pytest.raises(Exception, match="unknown model"):
            embed_on_worker(system, wrong)


def test_an_out_folder_embeds_and_saved_files_follow_the_umask(system, billing_job, tmp_path):
    from db import repo
    from db.session import session_scope

    with session_scope(system["db_url"]) as session:
        folder = Path(
            repo.versions.get_model_version(
                session, billing_job["model_version_id"], scope=repo.ALL_PROJECTS
            ).path
        )
    mask = os.umask(0)
    os.umask(mask)
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o777 if path.is_dir() else 0o666) & ~mask, (path, oct(mode))
    out = tmp_path / "out"
    shutil.copytree(folder, out / "model")  # what `embedctl finetune --out out` leaves
    np.testing.assert_allclose(
        embed_on_cli(system, str(out)), embed_on_worker(system, "minilm-billing"), atol=1e-5
    )


def test_same_key_other_request_is_a_conflict_and_a_repeat_reads_the_current_status(
    system, billing_job
):
    from workers.jobs.idempotency import IdempotencyConflict

    same = dict(
        model="minilm",
        triplets=TRIPLETS,
        epochs=1,
        batch_size=4,
        suffix="billing",
        idempotency_key="names-1",
    )
    assert call(system, "embedding.finetune_request", **same) == {
        "job_id": billing_job["id"],
        "status": "succeeded",
    }
    before = job_count(system["db_url"])
    for change in ({"epochs": 2}, {"model": "qodo"}, {"triplets": TRIPLETS[:2]}):
        reply = call(system, "embedding.finetune_request", **{**same, **change})
        assert reply["status"] == "conflict" and reply["job_id"] == billing_job["id"], reply
        assert "names-1" in reply["error"] and "different request" in reply["error"]
    assert job_count(system["db_url"]) == before

    from core.config import get_settings
    from workers.client import submit_finetune

    old = dict(os.environ)
    os.environ.update({k: v for k, v in system["env"].items() if k.startswith("EMBEDDING_")})
    get_settings.cache_clear()
    try:
        with pytest.raises(IdempotencyConflict) as info:
            submit_finetune(**{**same, "epochs": 5})
        assert info.value.job_id == billing_job["id"]
    finally:
        os.environ.clear()
        os.environ.update(old)
        get_settings.cache_clear()
        from db.session import dispose_engines

        dispose_engines()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset": "/etc/passwd"}, "dataset '/etc/passwd' resolves to"),
        ({"dataset": "{artifacts}/../../../etc/passwd"}, "outside the allowed roots"),
        ({"dataset": "{artifacts}/missing.jsonl"}, "is not a file"),
        ({"model": "someorg/somemodel"}, "named by no spec"),
        ({"model": "/etc"}, "outside the allowed roots"),
        ({"model": "no-such-model"}, "UnknownModel"),
        ({"triplets": [TRIPLETS[0], {**TRIPLETS[1], "positive": "a\x00b"}]}, "triplets.1.positive"),
        ({"triplets": [{**TRIPLETS[0], "negative": "x\ud800"}]}, "triplets.0.negative"),
        ({"idempotency_key": "k\x00"}, "idempotency_key contains a NUL"),
    ],
)
def test_submit_time_checks_refuse_before_anything_is_recorded(system, change, message):
    payload = {"model": "minilm", "triplets": TRIPLETS, "epochs": 1}
    for key, value in change.items():
        payload[key] = (
            value.format(artifacts=system["artifacts"]) if isinstance(value, str) else value
        )
    if "dataset" in change:
        del payload["triplets"]
    before = job_count(system["db_url"])
    reply = call(system, "embedding.finetune_request", **payload)
    assert reply["status"] == "rejected" and reply["job_id"] is None, reply
    assert message in reply["error"], reply["error"]
    assert job_count(system["db_url"]) == before


def test_a_dataset_under_the_roots_is_accepted(system):
    data = system["artifacts"] / "data.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in TRIPLETS))
    reply = call(system, "embedding.finetune_request", model="minilm", dataset=str(data), epochs=1)
    assert reply["status"] == "queued", reply
    assert wait_status(system, reply["job_id"], ("succeeded", "failed"))["status"] == "succeeded"


def test_celery_only_client_follows_and_cancels_a_job_and_flower_shows_the_loss(system):
    port = free_port()
    log = (system["artifacts"] / "flower.log").open("wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "flower", "--port", str(port)],
        env={**system["env"], "FLOWER_BASIC_AUTH": "ops:s3cret"},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    auth = "Basic " + base64.b64encode(b"ops:s3cret").decode()
    # The job holds the one slot of the gpu,cpu worker: status and cancel run on a cpu
    # worker, as in production.
    stack = contextlib.ExitStack()
    stack.enter_context(
        celery_worker(system["env"], system["artifacts"] / "cpu-worker.log", queues="cpu")
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/healthcheck", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                assert time.monotonic() < deadline and flower.poll() is None, "flower did not start"
                time.sleep(0.3)
        many = [
            {
                "anchor": f"def process_{i}(x)",
                "positive": f"def handle_{i}(y)",
                "negative": f"SELECT c{i}",
            }
            for i in range(40)
        ]
        reply = call(
            system,
            "embedding.finetune_request",
            model="minilm",
            triplets=many,
            epochs=300,
            batch_size=4,
        )
        job_id = reply["job_id"]
        client = plain(system["broker"])
        seen: dict = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            request = urllib.request.Request(base + "/api/tasks", headers={"Authorization": auth})
            tasks = json.loads(urllib.request.urlopen(request, timeout=5).read())
            seen = tasks.get(job_id, {})
            if seen.get("state") == "PROGRESS" and isinstance(seen.get("result"), dict):
                break
            time.sleep(0.3)
        assert seen.get("state") == "PROGRESS", seen
        assert {"epoch", "epochs", "loss"} <= set(seen["result"]), seen
        progress = client.AsyncResult(job_id)
        assert progress.state == "PROGRESS" and progress.info["epoch"] >= 1

        cancelled = call(system, "embedding.cancel_job", job_id=job_id)
        assert cancelled["id"] == job_id and cancelled["status"] in ("running", "cancelled")
        job = wait_status(system, job_id, ("cancelled", "failed", "succeeded"), timeout=120)
        assert job["status"] == "cancelled", job
        result = client.AsyncResult(job_id).get(timeout=60)
        assert result == {"job_id": job_id, "status": "cancelled"}
        missing = call(system, "embedding.job_status", job_id="not-a-job")
        assert missing["status"] == "not_found"
    finally:
        stop_process(flower)
        log.close()
        stack.close()

"""The worker system with real parts: local Redis, a PostgreSQL database of its own, and a
real ``embedctl worker`` subprocess; Flower as a subprocess against the same Redis."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.support import (
    ROOT,
    celery_worker,
    free_port,
    postgres_database,
    redis_url,
    service_env,
    stop_process,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """Migrated PostgreSQL + Redis db 11 + one worker on both queues."""
    from db import migrate

    artifacts = tmp_path_factory.mktemp("artifacts")
    with postgres_database() as db_url:
        migrate.upgrade(db_url)
        broker = redis_url(11)
        env = service_env(db_url, broker, artifacts)
        with celery_worker(env, artifacts / "worker.log") as proc:
            yield {
                "env": env,
                "db_url": db_url,
                "broker": broker,
                "artifacts": artifacts,
                "worker": proc,
            }


def plain_celery(broker: str):
    """A client that knows nothing of our package: only celery and a broker URL."""
    from celery import Celery

    client = Celery(broker=broker, backend=broker)
    client.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    return client


def test_embed_task_matches_the_local_encoder(system):
    from embedding.encoder import Encoder

    texts = ["def f(): return 1", "SELECT * FROM users", ""]
    reply = (
        plain_celery(system["broker"])
        .send_task("embedding.embed", kwargs={"texts": texts, "model": "minilm"}, queue="gpu")
        .get(timeout=120)
    )
    local = Encoder.load("minilm", device="cpu").encode(texts)
    assert reply["model"] == "minilm" and reply["dim"] == 384
    np.testing.assert_allclose(np.asarray(reply["vectors"], dtype=np.float32), local, atol=1e-5)


def test_load_model_task_returns_the_load_report(system):
    reply = (
        plain_celery(system["broker"])
        .send_task("embedding.load_model", kwargs={"model": "minilm"}, queue="gpu")
        .get(timeout=120)
    )
    report = reply["reports"][0]
    assert (
        report["model"] == "minilm" and report["tensor_count"] >= 100 and report["weights_present"]
    )


def test_bad_payload_fails_with_a_clear_error(system):
    result = plain_celery(system["broker"]).send_task(
        "embedding.embed", kwargs={"texts": [], "model": "minilm"}, queue="gpu"
    )
    with pytest.raises(Exception, match="texts: List should have at least 1 item"):
        result.get(timeout=60)


def test_flower_lists_our_task_and_requires_auth(system):
    port = free_port()
    env = {
        **system["env"],
        "FLOWER_BASIC_AUTH": "ops:s3cret",
        "FLOWER_UNAUTHENTICATED_API": "false",
    }
    log = (system["artifacts"] / "flower.log").open("wb")
    flower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "flower",
            "--port",
            str(port),
            "--persistent",
            "--db",
            str(system["artifacts"] / "flower.db"),
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/healthcheck", flower)
        task_id = plain_celery(system["broker"]).send_task(
            "embedding.embed", kwargs={"texts": ["flower sees me"], "model": "minilm"}, queue="gpu"
        )
        task_id.get(timeout=120)
        token = base64.b64encode(b"ops:s3cret").decode()
        deadline = time.monotonic() + 30
        tasks = {}
        while time.monotonic() < deadline:
            request = urllib.request.Request(
                base + "/api/tasks", headers={"Authorization": f"Basic {token}"}
            )
            tasks = json.loads(urllib.request.urlopen(request, timeout=5).read())
            if task_id.id in tasks and tasks[task_id.id].get("state") == "SUCCESS":
                break
            time.sleep(0.5)
        assert tasks[task_id.id]["name"] == "embedding.embed"
        assert tasks[task_id.id]["state"] == "SUCCESS"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + "/api/tasks", timeout=5)
        assert info.value.code == 401
    finally:
        stop_process(flower)
        log.close()


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (auth may be required even here)
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def test_worker_refuses_a_pickle_message(system):
    """A pickle-serialized message put on the queue by hand is refused, never run."""
    import pickle

    from kombu import Connection

    body = pickle.dumps(
        (
            (),
            {"model": "minilm"},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        )
    )
    with Connection(system["broker"]) as conn:
        producer = conn.Producer()
        producer.publish(
            body,
            routing_key="gpu",
            exchange="gpu",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={
                "lang": "py",
                "task": "embedding.load_model",
                "id": "pickle-probe",
                "argsrepr": "",
                "kwargsrepr": "",
            },
        )
    deadline = time.monotonic() + 10
    log = system["artifacts"] / "worker.log"
    while (
        time.monotonic() < deadline
        and b"pickle-probe" not in log.read_bytes()
        and b"ContentDisallowed" not in log.read_bytes()
    ):
        time.sleep(0.2)
    text = log.read_text()
    assert "ContentDisallowed" in text or "Refusing to deserialize" in text, text[-2000:]
    assert "Task embedding.load_model[pickle-probe] succeeded" not in text

"""Security defaults: secrets stay out of logs, no pickle anywhere, no remote code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.config import redact_url
from tests.servers import RedisServer
from tests.support import (
    ALL_QUEUES,
    ROOT,
    celery_worker,
    postgres_database,
    service_env,
)

SECRET = "s3cr3t-Redis-pw-9f2c"


def test_redact_url_hides_passwords():
    assert redact_url(f"redis://:{SECRET}@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert (
        redact_url("postgresql+psycopg://u:pw@db:5432/x") == "postgresql+psycopg://u:***@db:5432/x"
    )
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.integration
@pytest.mark.slow
def test_a_password_in_the_broker_url_never_reaches_the_log(tmp_path):
    with RedisServer(password=SECRET) as redis:  # returns once it answers an authenticated PING
        broker = redis.url()
        assert SECRET in broker
        with postgres_database("emb_sec") as db_url:
            from db import migrate

            migrate.upgrade(db_url)
            env = service_env(db_url, broker, tmp_path)
            log = tmp_path / "worker.log"
            with celery_worker(env, log, queues=ALL_QUEUES):
                from celery import Celery

                client = Celery(broker=broker, backend=broker)
                client.conf.update(
                    task_serializer="json", accept_content=["json"], result_serializer="json"
                )
                reply = client.send_task(
                    "embedding.embed", kwargs={"texts": ["x"]}, queue="gpu"
                ).get(timeout=120)
                assert reply["dim"] == 384
            text = log.read_text()
            assert (
                "ready." in text and f"127.0.0.1:{redis.port}" in text
            )  # the log does talk about the broker
            assert SECRET not in text


UNSAFE = re.compile(
    r"pickle\.loads?\(|torch\.load\(|trust_remote_code\s*=\s*True|accept_content.*pickle|weights_only\s*=\s*False"
)


def test_no_code_path_loads_pickle_or_remote_code():
    offenders = []
    for folder in ("core", "embedding", "db", "workers", "api", "migrations", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(part.startswith(".venv") for part in path.relative_to(ROOT).parts):
                continue  # a benchmark peer's own virtualenv (benchmarks/.venv-infinity)
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if UNSAFE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_the_app_accepts_json_only():
    from workers.app import app

    assert app.conf.accept_content == ["json"]
    assert app.conf.result_accept_content == ["json"]
    assert app.conf.task_serializer == "json" and app.conf.result_serializer == "json"


def test_builtin_specs_never_trust_remote_code():
    from embedding.models.specs import BUILTIN_SPECS

    assert not any(spec.trust_remote_code for spec in BUILTIN_SPECS.values())
    assert (
        Path(ROOT / "embedding" / "inference" / "encoder.py")
        .read_text()
        .count("trust_remote_code=spec.trust_remote_code")
        == 2
    )

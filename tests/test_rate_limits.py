"""Sharing the fleet, the API's side: per-project embedding rate limits, usage, storage quota.

The fast tests drive :mod:`api.rate_limits` on ``limits``' memory storage (the embedded
mode's). The integration tests run real PostgreSQL, Redis (database 5: the broker, and so the
limits' storage), a real worker and two real API processes, with the ``openai`` SDK as the
client: a project's limit is one limit whichever process a request reaches.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from api import rate_limits
from tests.support import (
    ROOT,
    api_server,
    celery_worker,
    postgres_database,
    redis_url,
    service_env,
)

REDIS_DB = 5  # no other test uses it
RESET = re.compile(r"^(\d+ms|\d+s|\d+m\d+s)$")


# ------------------------------------------------------------------ fast: the limiter alone
@pytest.fixture
def memory_limits(monkeypatch):
    from core.config import get_settings

    monkeypatch.setenv("EMBEDDING_RATE_LIMIT_URL", "memory://")
    get_settings.cache_clear()
    rate_limits._limiters.clear()
    yield rate_limits.limiter()
    rate_limits._limiters.clear()
    get_settings.cache_clear()


def test_the_limits_default_to_the_brokers_redis_else_memory():
    from core.config import Settings

    assert rate_limits.storage_url(Settings(broker_url="redis://h:6379/2")) == "redis://h:6379/2"
    assert rate_limits.storage_url(Settings(broker_url=None)) == "memory://"
    assert rate_limits.storage_url(Settings(broker_url="amqp://h")) == "memory://"
    own = Settings(broker_url="redis://h/2", rate_limit_url="redis://other/0")
    assert rate_limits.storage_url(own) == "redis://other/0"


def test_reset_durations_read_like_openais():
    assert [rate_limits.duration(s) for s in (0.02, 1, 59.2, 60, 360, 61.5)] == [
        "20ms",
        "1s",
        "1m0s",
        "1m0s",
        "6m0s",
        "1m2s",
    ]


def test_requests_per_minute_refuse_the_third_with_headers(memory_limits):
    project = "proj_rpm_unit"
    first = rate_limits.admit(project, 2, None, 5)
    assert rate_limits.charge(first, 5)["x-ratelimit-remaining-requests"] == "1"
    rate_limits.admit(project, 2, None, 5)
    with pytest.raises(rate_limits.RateLimited) as refused:
        rate_limits.admit(project, 2, None, 5)
    err = refused.value
    assert (err.status, err.code, err.type, err.limit) == (
        429,
        "rate_limit_exceeded",
        "requests",
        "requests",
    )
    assert 1 <= int(err.headers["retry-after"]) <= 61
    assert err.headers["x-ratelimit-limit-requests"] == "2"
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert RESET.match(err.headers["x-ratelimit-reset-requests"])
    assert "x-ratelimit-limit-tokens" not in err.headers  # only the limits the project has


def test_tokens_are_checked_on_the_estimate_and_charged_for_real(memory_limits):
    project = "proj_tpm_unit"
    admitted = rate_limits.admit(project, None, 100, 10)
    headers = rate_limits.charge(admitted, 70)  # the real count, above the estimate
    assert headers["x-ratelimit-remaining-tokens"] == "30"
    rate_limits.admit(project, None, 100, 30)  # fits exactly: checked, not charged
    with pytest.raises(rate_limits.RateLimited) as refused:
        rate_limits.admit(project, None, 100, 31)
    assert refused.value.limit == "tokens" and refused.value.type == "tokens"
    with pytest.raises(rate_limits.RateLimited, match="Request too large"):
        rate_limits.admit("proj_other", None, 100, 101)  # can never fit
    # A charge past the limit sticks: the window is spent, whatever the estimate said.
    rate_limits.charge(rate_limits.admit(project, None, 100, 30), 45)
    with pytest.raises(rate_limits.RateLimited):
        rate_limits.admit(project, None, 100, 1)


def test_a_project_without_limits_is_not_counted(memory_limits):
    admitted = rate_limits.admit("proj_free_unit", None, None, 10**9)
    assert rate_limits.charge(admitted, 10**9) == {}


# ------------------------------------------------------------------ the world
def cli_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args, "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def set_limits(db_url: str, project: str, **limits: Any) -> None:
    from db import repo
    from db.session import session_scope

    with session_scope(db_url) as session:
        repo.projects.set_limits(session, project, **limits)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from db import migrate

    tmp = tmp_path_factory.mktemp("fleet_limits")
    artifacts = tmp / "artifacts"
    artifacts.mkdir()
    with postgres_database("emb_limits") as db_url:
        migrate.upgrade(db_url)
        env = service_env(db_url, redis_url(REDIS_DB), artifacts, TOKENIZERS_PARALLELISM="false")
        names = ("rpm", "retry", "tpm", "quota", "free", "metered")
        projects = {n: cli_json(env, "projects", "create", n)["id"] for n in names}
        keys = {
            n: cli_json(env, "keys", "create", "--project", n, "--name", f"svc-{n}")["key"]
            for n in names
        }
        keys["admin"] = cli_json(env, "keys", "create", "--admin", "--name", "ops")["key"]
        set_limits(db_url, "rpm", embeddings_rpm=2)
        set_limits(db_url, "retry", embeddings_rpm=1)
        set_limits(db_url, "metered", embeddings_rpm=1)
        set_limits(db_url, "tpm", embeddings_tpm=40)
        set_limits(db_url, "quota", max_storage_bytes=1000)
        logs = [tmp / "worker.log", tmp / "api1.log", tmp / "api2.log"]
        with (
            celery_worker(env, logs[0], queues="embed", ready_timeout=180),
            api_server(env, logs[1]) as base1,
            api_server(env, logs[2]) as base2,
        ):
            yield SimpleNamespace(
                db_url=db_url,
                artifacts=artifacts,
                bases=(base1, base2),
                projects=projects,
                keys=keys,
            )


def sdk(base: str, key: str, max_retries: int = 0):
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=max_retries, timeout=180)


def http(base: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=httpx.Timeout(180.0)
    )


def embed_raw(base: str, key: str, texts: list[str]):
    return sdk(base, key).embeddings.with_raw_response.create(model="minilm", input=texts)


# ------------------------------------------------------------------ integration
@pytest.mark.integration
@pytest.mark.slow
def test_requests_per_minute_are_one_limit_across_two_api_processes(world):
    import openai

    base1, base2 = world.bases
    key = world.keys["rpm"]
    first = embed_raw(base1, key, ["def one(): return 1"])
    second = embed_raw(base2, key, ["def two(): return 2"])
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"  # the other process's count
    assert RESET.match(second.headers["x-ratelimit-reset-requests"])
    assert "x-ratelimit-limit-tokens" not in second.headers
    for base in (base1, base2):
        with pytest.raises(openai.RateLimitError) as refused:
            sdk(base, key).embeddings.create(model="minilm", input=["def three(): return 3"])
        err = refused.value
        assert err.status_code == 429 and err.code == "rate_limit_exceeded"
        assert err.type == "requests"
        headers = err.response.headers
        assert 1 <= int(headers["retry-after"]) <= 61
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert RESET.match(headers["x-ratelimit-reset-requests"])
    # Another project is not held back by this one's limit.
    assert (
        embed_raw(base1, world.keys["free"], ["def free(): pass"]).http_response.status_code == 200
    )


@pytest.mark.integration
@pytest.mark.slow
def test_tokens_per_minute_estimate_before_and_charge_after(world):
    import openai

    base1, base2 = world.bases
    key = world.keys["tpm"]
    first = embed_raw(base1, key, ["def add(a, b): return a + b"])
    used = first.parse().usage.total_tokens
    assert first.headers["x-ratelimit-limit-tokens"] == "40"
    # The worker's real count is what is charged, not the estimate.
    assert first.headers["x-ratelimit-remaining-tokens"] == str(40 - used)
    assert "x-ratelimit-limit-requests" not in first.headers
    # A request estimated at one token more than what is left is refused by the other process.
    left = 40 - used
    text = "x" * (4 * (left - 1))  # estimated_tokens: len // 4 + 2 = left + 1
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(base2, key).embeddings.create(model="minilm", input=[text])
    err = refused.value
    assert err.code == "rate_limit_exceeded" and err.type == "tokens"
    headers = err.response.headers
    assert headers["x-ratelimit-remaining-tokens"] == str(left)
    assert 1 <= int(headers["retry-after"]) <= 61 and RESET.match(
        headers["x-ratelimit-reset-tokens"]
    )
    with pytest.raises(openai.RateLimitError, match="Request too large"):
        sdk(base1, key).embeddings.create(model="minilm", input=["y" * 400])


@pytest.mark.integration
@pytest.mark.slow
def test_embeddings_are_recorded_in_the_projects_usage(world):
    from db import repo
    from db.session import session_scope

    base1, base2 = world.bases
    key = world.keys["free"]
    with session_scope(world.db_url) as session:
        before = repo.usage.totals(session).get(world.projects["free"], {})
    tokens = 0
    for i, base in enumerate((base1, base2, base1)):
        reply = sdk(base, key).embeddings.create(
            model="minilm", input=[f"def usage_{i}(x): return x * {i}", f"usage text {i}"]
        )
        tokens += reply.usage.total_tokens
    with session_scope(world.db_url) as session:
        after = repo.usage.totals(session)[world.projects["free"]]
    assert after["embedding_requests"] - before.get("embedding_requests", 0) == 3
    assert after["tokens_embedded"] - before.get("tokens_embedded", 0) == tokens
    assert after["gpu_seconds_embedding"] > before.get("gpu_seconds_embedding", 0)
    # The admin usage route: today's bucket holds the project's line.
    with http(base2, world.keys["admin"]) as admin:
        page = admin.get("/v1/organization/usage", params={"project_id": "free"})
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["object"] == "page" and len(body["data"]) == 7
        today = body["data"][-1]
        (result,) = today["results"]
        assert result["project_id"] == world.projects["free"] and result["project_name"] == "free"
        assert result["embedding_requests"] == after["embedding_requests"]
        everyone = admin.get("/v1/organization/usage").json()["data"][-1]["results"]
        assert {r["project_name"] for r in everyone} >= {"free", "rpm", "tpm"}
        assert (
            admin.get("/v1/organization/usage", params={"start_date": "May 1"}).status_code == 400
        )
        assert admin.get("/v1/organization/usage", params={"project_id": "nope"}).status_code == 404
        # The jobs page shows an admin the usage table.
        page = admin.get("/").text
        row = re.search(rf'<tr data-project="{world.projects["free"]}">(.*?)</tr>', page)
        assert row is not None, page
        assert (
            f'data-counter="embedding_requests" data-span="today">{int(after["embedding_requests"])}<'
            in row.group(1)
        )
    with http(base1, key) as member:
        assert member.get("/v1/organization/usage").status_code == 403
        assert 'id="usage"' not in member.get("/").text  # a project key sees no usage table


def _stored_files(world) -> list[str]:
    folder = world.artifacts / "files"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.integration
@pytest.mark.slow
def test_the_storage_quota_refuses_uploads_and_leaves_nothing_behind(world):
    import openai

    base1, base2 = world.bases
    key = world.keys["quota"]
    rows = b"".join(
        b'{"anchor": "q%d", "positive": "def f%d(): return %d"}\n' % (i, i, i) for i in range(12)
    )
    assert 500 < len(rows) <= 1000
    sdk(base1, key).files.create(file=("one.jsonl", io.BytesIO(rows)), purpose="fine-tune")
    on_disk = _stored_files(world)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(base2, key).files.create(file=("two.jsonl", io.BytesIO(rows)), purpose="fine-tune")
    assert refused.value.code == "insufficient_quota"
    assert refused.value.type == "insufficient_quota"
    assert _stored_files(world) == on_disk
    assert len(sdk(base1, key).files.list().data) == 1
    # A dataset's archive over what is left is refused before any build, nothing kept.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("big.py", "# padding\n" * 100)
    with http(base1, key) as client:
        answer = client.post(
            "/v1/datasets", files={"archive": ("repo.zip", buffer.getvalue(), "application/zip")}
        )
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "insufficient_quota"
    assert _stored_files(world) == on_disk
    # Another project is not held to this one's quota.
    sdk(base1, world.keys["free"]).files.create(
        file=("free.jsonl", io.BytesIO(rows)), purpose="fine-tune"
    )


@pytest.mark.integration
@pytest.mark.slow
def test_metrics_show_each_projects_usage_and_refusals(world):
    import openai

    base1, _ = world.bases
    embed_raw(base1, world.keys["metered"], ["def metered(): pass"])
    with pytest.raises(openai.RateLimitError):
        sdk(base1, world.keys["metered"]).embeddings.create(model="minilm", input=["def m(): 1"])
    with http(base1, world.keys["free"]) as client:  # a project key: not every project's lines
        refused = client.get("/metrics")
        assert refused.status_code == 403, refused.text
    with http(base1, world.keys["admin"]) as client:
        text = client.get("/metrics").text
    free, rpm = world.projects["free"], world.projects["metered"]
    assert re.search(
        rf'embedding_project_usage_total\{{counter="embedding_requests",project="{free}"\}} [1-9]',
        text,
    ), text
    assert re.search(rf'embedding_project_stored_bytes\{{project="{free}"\}} [1-9]', text)
    assert re.search(
        rf'embedding_rate_limited_total\{{limit="requests",project="{rpm}"\}} [1-9]', text
    ), text


@pytest.mark.integration
@pytest.mark.slow
def test_the_sdk_waits_retry_after_and_gets_through(world):
    """rpm 1: the second request is 429; the SDK (max_retries=1) sleeps the Retry-After it
    was given and its retry, in the renewed window, is answered."""
    import openai

    base1, base2 = world.bases
    key = world.keys["retry"]
    assert embed_raw(base1, key, ["def first(): pass"]).http_response.status_code == 200
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(base2, key).embeddings.create(model="minilm", input=["def refused(): pass"])
    retry_after = int(refused.value.response.headers["retry-after"])
    started = time.monotonic()
    reply = sdk(base2, key, max_retries=1).embeddings.with_raw_response.create(
        model="minilm", input=["def retried(): pass"]
    )
    waited = time.monotonic() - started
    assert reply.http_response.status_code == 200
    assert reply.retries_taken == 1
    assert waited >= retry_after - 2  # it slept what the server said, not its own backoff

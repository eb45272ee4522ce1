"""Projects walled off from each other, end to end: real PostgreSQL, Redis, a real worker and
two real API processes, the ``openai`` SDK as the client where it has the call.

Project A (team-a) makes one of everything (files, a fine-tuned model, a batch, an
evaluation, a validation run, a dataset); project B's key then tries every route of the app,
enumerated from FastAPI itself, on A's ids: each is a 404, as for an id that does not exist.
A route added later without a place in :data:`ROUTE_CHECKS` fails the matrix until someone
says how it keeps the wall.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import zipfile
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from embedding.data.examples import SEED_TRIPLETS, write_examples
from tests.servers import _pg_bin
from tests.support import (
    ALL_QUEUES,
    ROOT,
    api_server,
    celery_worker,
    postgres_database,
    redis_url,
    service_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 6  # no other test uses it
LEGACY_KEY = "sk-legacy-6b1e2c"  # EMBEDDING_API_KEYS: a member of the default project
TEXTS = ["def add(a, b): return a + b", "SELECT name FROM users"]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = cli(env, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def sdk(base: str, key: str, **options: Any):
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=180, **options)


def wait_for(fetch, done, seconds: float = 300.0, interval: float = 0.3):
    deadline = time.monotonic() + seconds
    while True:
        item = fetch()
        if done(item) or time.monotonic() > deadline:
            return item
        time.sleep(interval)


def source(i: int) -> str:
    return (
        f'def total_{i}(values):\n    """Add up the values of batch number {i}."""\n'
        f"    total = {i}\n    for v in values:\n        total += v * {i}\n    return total\n"
    )


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


# ------------------------------------------------------------------ the world
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from db import migrate

    tmp = tmp_path_factory.mktemp("projects")
    artifacts = tmp / "artifacts"
    artifacts.mkdir()
    with postgres_database("emb_projects") as db_url:
        migrate.upgrade(db_url)
        env = service_env(
            db_url,
            redis_url(REDIS_DB),
            artifacts,
            EMBEDDING_API_KEYS=LEGACY_KEY,
            TOKENIZERS_PARALLELISM="false",
        )
        projects = {n: cli_json(env, "projects", "create", n) for n in ("team-a", "team-b")}
        keys = {
            "a": cli_json(env, "keys", "create", "--project", "team-a", "--name", "svc-a"),
            "b": cli_json(env, "keys", "create", "--project", "team-b", "--name", "svc-b"),
            "b_ro": cli_json(
                env, "keys", "create", "--project", "team-b", "--name", "dash", "--read-only"
            ),
            "admin": cli_json(env, "keys", "create", "--admin", "--name", "ops"),
        }
        logs = [tmp / "worker.log", tmp / "api1.log", tmp / "api2.log"]
        with (
            celery_worker(env, logs[0], queues=ALL_QUEUES, ready_timeout=180),
            api_server(env, logs[1]) as base1,
            api_server(env, logs[2]) as base2,
        ):
            yield SimpleNamespace(
                db_url=db_url,
                env=env,
                tmp=tmp,
                artifacts=artifacts,
                base=base1,
                base2=base2,
                projects=projects,
                keys=keys,
                secret={name: k["key"] for name, k in keys.items()},
                logs=logs,
            )


def http(world, key: str, base: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=base or world.base, headers={"Authorization": f"Bearer {key}"}, timeout=180
    )


@pytest.fixture(scope="module")
def team_a(world):
    """One of every resource, made with A's key."""
    client = sdk(world.base, world.secret["a"])
    train = world.tmp / "train.jsonl"
    write_examples(train, SEED_TRIPLETS)
    with train.open("rb") as fh:
        training_file = client.files.create(file=fh, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="minilm",
        training_file=training_file,
        hyperparameters={"n_epochs": 1, "batch_size": 5},
        suffix="teama",
        extra_body={"loss": "triplet"},
    )
    job = wait_for(
        lambda: client.fine_tuning.jobs.retrieve(job.id),
        lambda j: j.status in ("succeeded", "failed", "cancelled"),
    )
    assert job.status == "succeeded", job.error

    pairs = world.tmp / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"anchor": t[0], "positive": t[1]}) + "\n" for t in SEED_TRIPLETS)
    )
    with pairs.open("rb") as fh:
        pairs_file = client.files.create(file=fh, purpose="fine-tune").id
    requests = [
        {
            "custom_id": "r0",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": job.fine_tuned_model, "input": TEXTS},
        }
    ]
    batch_path = world.tmp / "batch.jsonl"
    batch_path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    with batch_path.open("rb") as fh:
        batch_file = client.files.create(file=fh, purpose="batch").id
    batch = client.batches.create(
        input_file_id=batch_file, endpoint="/v1/embeddings", completion_window="24h"
    )
    batch = wait_for(
        lambda: client.batches.retrieve(batch.id),
        lambda b: b.status in ("completed", "failed", "cancelled", "expired"),
    )
    assert batch.status == "completed", batch

    with http(world, world.secret["a"]) as raw:
        evaluation = raw.post(
            "/v1/evaluations",
            json={"model_a": "minilm", "model_b": job.fine_tuned_model, "data_file": pairs_file},
        )
        assert evaluation.status_code == 200, evaluation.text
        validation = raw.post(
            "/v1/validations", json={"models": ["minilm"], "checks": ["model_loading"]}
        )
        assert validation.status_code == 200, validation.text
        archive = zip_of({f"pkg/m{i}.py": source(i) for i in range(12)})
        dataset = raw.post(
            "/v1/datasets",
            data={"eval_share": "0.25"},
            files={"archive": ("repo.zip", archive)},
        )
        assert dataset.status_code == 200, dataset.text
    return SimpleNamespace(
        client=client,
        training_file=training_file,
        pairs_file=pairs_file,
        batch_file=batch_file,
        job=job,
        ft_model=job.fine_tuned_model,
        folder=str(world.artifacts / "jobs" / job.id / "model"),
        batch=batch,
        output_file=batch.output_file_id,
        evaluation=evaluation.json()["id"],
        validation=validation.json()["id"],
        dataset_file=dataset.json()["training_file"]["id"],
    )


# ------------------------------------------------------------------ the route matrix
def app_routes() -> set[tuple[str, str]]:
    """Every (method, path) the app serves, read from FastAPI itself."""
    from api.app import create_app

    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes)
            elif isinstance(route, APIRoute):
                path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # {model_id:path}
                found.update((m, path) for m in route.methods)
            elif getattr(route, "path", "").startswith(("/openapi", "/docs", "/redoc")):
                continue  # FastAPI's own documentation pages: no data

    walk(create_app().routes)
    return found


# How each route keeps the wall. "id": it takes an id of a project's resource (B's key on
# A's id must be a 404); "admin": admin keys only (403 for a project key, whatever the id);
# "body": it names resources in its body (tested below on A's ids); "list": it lists the
# caller's own (tested below); "open": no tenant data (probes, the login form).
ROUTE_CHECKS: dict[tuple[str, str], str] = {
    ("GET", "/health"): "open",
    ("GET", "/ready"): "open",
    ("GET", "/metrics"): "admin",  # admin or legacy keys: its lines name every project
    ("GET", "/login"): "open",
    ("POST", "/login"): "open",
    ("GET", "/"): "list",
    ("POST", "/v1/embeddings"): "body",
    ("GET", "/v1/models"): "list",
    ("GET", "/v1/models/{model_id}"): "id",
    ("DELETE", "/v1/models/{model_id}"): "id",
    ("POST", "/v1/files"): "body",
    ("GET", "/v1/files"): "list",
    ("GET", "/v1/files/{file_id}"): "id",
    ("DELETE", "/v1/files/{file_id}"): "id",
    ("GET", "/v1/files/{file_id}/content"): "id",
    ("POST", "/v1/fine_tuning/jobs"): "body",
    ("GET", "/v1/fine_tuning/jobs"): "list",
    ("GET", "/v1/fine_tuning/jobs/{job_id}"): "id",
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"): "id",
    ("GET", "/v1/fine_tuning/jobs/{job_id}/events"): "id",
    ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): "id",
    ("POST", "/v1/batches"): "body",
    ("GET", "/v1/batches"): "list",
    ("GET", "/v1/batches/{batch_id}"): "id",
    ("POST", "/v1/batches/{batch_id}/cancel"): "id",
    ("POST", "/v1/validations"): "body",
    ("GET", "/v1/validations/{validation_id}"): "id",
    ("POST", "/v1/evaluations"): "body",
    ("GET", "/v1/evaluations"): "list",
    ("GET", "/v1/evaluations/{evaluation_id}"): "id",
    ("POST", "/v1/datasets"): "body",
    ("GET", "/v1/organization/projects"): "admin",
    ("POST", "/v1/organization/projects"): "admin",
    ("GET", "/v1/organization/projects/{project_id}"): "admin",
    ("POST", "/v1/organization/projects/{project_id}"): "admin",
    ("POST", "/v1/organization/projects/{project_id}/archive"): "admin",
    ("GET", "/v1/organization/projects/{project_id}/limits"): "admin",
    ("POST", "/v1/organization/projects/{project_id}/limits"): "admin",
    ("GET", "/v1/organization/projects/{project_id}/api_keys"): "admin",
    ("POST", "/v1/organization/projects/{project_id}/api_keys"): "admin",
    ("GET", "/v1/organization/projects/{project_id}/api_keys/{key_id}"): "admin",
    ("DELETE", "/v1/organization/projects/{project_id}/api_keys/{key_id}"): "admin",
    ("GET", "/v1/organization/admin_api_keys"): "admin",
    ("POST", "/v1/organization/admin_api_keys"): "admin",
    ("DELETE", "/v1/organization/admin_api_keys/{key_id}"): "admin",
    ("GET", "/v1/organization/audit_logs"): "admin",
    ("GET", "/v1/organization/usage"): "admin",
}


def _ids(world, team_a) -> dict[str, str]:
    return {
        "file_id": team_a.training_file,
        "job_id": team_a.job.id,
        "batch_id": team_a.batch.id,
        "evaluation_id": team_a.evaluation,
        "validation_id": team_a.validation,
        "model_id": team_a.ft_model,
        "project_id": world.projects["team-a"]["id"],
        "key_id": world.keys["a"]["id"],
    }


def test_every_route_has_a_place_in_the_matrix():
    served = {(m, p) for m, p in app_routes() if m != "HEAD"}
    unknown = served - set(ROUTE_CHECKS)
    assert not unknown, f"routes with no project check in this matrix: {sorted(unknown)}"
    assert not set(ROUTE_CHECKS) - served, "the matrix names routes the app no longer has"


def _is_openai_error(reply: httpx.Response) -> bool:
    body = reply.json()
    return set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"])


def test_another_projects_ids_are_404_on_every_route(world, team_a):
    ids = _ids(world, team_a)
    files = [team_a.training_file, team_a.pairs_file, team_a.batch_file, team_a.output_file]
    checked = 0
    with http(world, world.secret["b"]) as b, http(world, world.secret["b"]) as b2:
        for (method, path), kind in sorted(ROUTE_CHECKS.items()):
            if kind not in ("id", "admin"):
                continue
            url = path.format(**ids)
            reply = b.request(method, url, json={} if method == "POST" else None)
            if kind == "admin":
                # A project key is refused whatever the id: the answer tells nothing of A.
                assert reply.status_code == 403, (method, url, reply.text)
                fake = path.format(**{k: "x_nope" for k in ids})
                other = b2.request(method, fake, json={} if method == "POST" else None)
                assert other.status_code == 403 and other.json() == reply.json()
            else:
                assert reply.status_code == 404, (method, url, reply.status_code, reply.text)
            assert _is_openai_error(reply), reply.text
            checked += 1
        for file_id in [*files[1:], team_a.dataset_file]:  # every file of A, each verb
            for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
                reply = b.request(method, f"/v1/files/{file_id}{suffix}")
                assert reply.status_code == 404, (method, file_id, reply.text)
    assert checked == sum(1 for k in ROUTE_CHECKS.values() if k in ("id", "admin"))
    # Nothing of A's changed: the job was not cancelled, the files not deleted.
    a = team_a.client
    assert a.fine_tuning.jobs.retrieve(team_a.job.id).status == "succeeded"
    assert a.files.retrieve(team_a.training_file).id == team_a.training_file
    assert a.models.retrieve(team_a.ft_model).id == team_a.ft_model


def test_the_sdk_gets_not_found_for_another_projects_ids(world, team_a):
    import openai

    b = sdk(world.base, world.secret["b"])
    calls = [
        lambda: b.files.retrieve(team_a.training_file),
        lambda: b.files.content(team_a.output_file),
        lambda: b.files.delete(team_a.batch_file),
        lambda: b.fine_tuning.jobs.retrieve(team_a.job.id),
        lambda: b.fine_tuning.jobs.cancel(team_a.job.id),
        lambda: b.fine_tuning.jobs.list_events(team_a.job.id),
        lambda: b.fine_tuning.jobs.checkpoints.list(team_a.job.id),
        lambda: b.batches.retrieve(team_a.batch.id),
        lambda: b.batches.cancel(team_a.batch.id),
        lambda: b.models.retrieve(team_a.ft_model),
        lambda: b.models.delete(team_a.ft_model),
        lambda: b.embeddings.create(model=team_a.ft_model, input=TEXTS),
        lambda: b.embeddings.create(model=team_a.folder, input=TEXTS),
        lambda: b.embeddings.create(model="minilm-teama", input=TEXTS),  # A's version name
        lambda: b.fine_tuning.jobs.create(model="minilm", training_file=team_a.training_file),
        lambda: b.batches.create(
            input_file_id=team_a.batch_file, endpoint="/v1/embeddings", completion_window="24h"
        ),
        lambda: b.fine_tuning.jobs.list(after=team_a.job.id),
        lambda: b.files.list(after=team_a.training_file),
    ]
    for number, call in enumerate(calls):
        with pytest.raises(openai.NotFoundError):
            call()
            pytest.fail(f"call {number} reached another project's resource")


def test_bodies_naming_another_projects_resources_are_404(world, team_a):
    with http(world, world.secret["b"]) as b:
        own_pairs = b.post(
            "/v1/files",
            files={"file": ("p.jsonl", (world.tmp / "pairs.jsonl").read_bytes())},
            data={"purpose": "fine-tune"},
        )
        assert own_pairs.status_code == 200, own_pairs.text
        bodies = [
            (
                "/v1/evaluations",
                {"model_a": "minilm", "model_b": "minilm", "data_file": team_a.pairs_file},
            ),
            (
                "/v1/evaluations",
                {
                    "model_a": "minilm",
                    "model_b": team_a.ft_model,
                    "data_file": own_pairs.json()["id"],
                },
            ),
            ("/v1/validations", {"models": [team_a.ft_model]}),
            ("/v1/validations", {"models": [team_a.folder]}),
            ("/v1/evaluations?after=" + team_a.evaluation, None),
        ]
        for path, body in bodies:
            reply = b.post(path, json=body) if body is not None else b.get(path)
            assert reply.status_code == 404, (path, body, reply.text)
            assert _is_openai_error(reply)


def test_lists_show_only_ones_own(world, team_a):
    a, b = team_a.client, sdk(world.base, world.secret["b"])
    a_files = {f.id for f in a.files.list().data}
    assert {team_a.training_file, team_a.batch_file, team_a.output_file} <= a_files
    assert team_a.dataset_file in a_files  # the dataset's files are A's too
    assert a_files.isdisjoint(f.id for f in b.files.list().data)
    assert team_a.job.id in {j.id for j in a.fine_tuning.jobs.list().data}
    assert not b.fine_tuning.jobs.list().data
    assert team_a.batch.id in {x.id for x in a.batches.list().data}
    assert not b.batches.list().data
    assert team_a.ft_model in {m.id for m in a.models.list().data}
    b_models = {m.id for m in b.models.list().data}
    assert "minilm" in b_models and team_a.ft_model not in b_models  # specs are everyone's
    with http(world, world.secret["b"]) as raw:
        assert raw.get("/v1/evaluations").json()["data"] == []
    with http(world, world.secret["a"]) as raw:
        assert team_a.evaluation in {e["id"] for e in raw.get("/v1/evaluations").json()["data"]}
        assert raw.get(f"/v1/validations/{team_a.validation}").status_code == 200


def test_the_jobs_page_shows_the_keys_project_and_admins_see_all(world, team_a):
    def page(key: str) -> str:
        with httpx.Client(base_url=world.base, timeout=60) as browser:
            login = browser.post("/login", data={"key": key})
            assert login.status_code == 303, login.text
            reply = browser.get("/")
            assert reply.status_code == 200
            return reply.text

    assert team_a.job.id in page(world.secret["a"])
    b_page = page(world.secret["b"])
    assert team_a.job.id not in b_page and "project team-b" in b_page
    admin_page = page(world.secret["admin"])
    assert team_a.job.id in admin_page and "<th>project</th>" in admin_page
    assert "team-a" in admin_page and "all projects" in admin_page
    with httpx.Client(base_url=world.base, timeout=60) as browser:
        assert browser.post("/login", data={"key": "sk-proj-nope"}).status_code == 401


# ------------------------------------------------------------------ keys
def test_a_read_only_key_reads_and_is_refused_writes(world):
    import openai

    ro = sdk(world.base, world.secret["b_ro"])
    assert ro.files.list().data is not None
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ro.files.create(file=("x.jsonl", b'{"anchor": "a", "positive": "b"}\n'), purpose="batch")
    assert "read-only" in refused.value.message and "'write' permission" in refused.value.message
    with pytest.raises(openai.PermissionDeniedError):
        ro.embeddings.create(model="minilm", input=TEXTS)


def test_unknown_and_expired_keys_are_401_and_member_keys_cannot_administer(world):
    import openai
    from sqlalchemy import text

    from db.session import make_engine

    with pytest.raises(openai.AuthenticationError):
        sdk(world.base, "sk-proj-" + "x" * 43).files.list()
    with httpx.Client(base_url=world.base, timeout=30) as anonymous:
        reply = anonymous.get("/v1/files")
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "missing_api_key"
    soon = cli_json(
        world.env, "keys", "create", "--project", "team-b", "--name", "t", "--expires-in", "1h"
    )
    client = sdk(world.base, soon["key"])
    client.files.list()  # valid until it expires
    engine = make_engine(world.db_url)  # the hour passes: its expiry is set an hour back
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE api_keys SET expires_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": soon["id"]},
        )
    engine.dispose()
    with pytest.raises(openai.AuthenticationError) as expired:
        client.files.list()
    assert "expired" in expired.value.message
    with pytest.raises(openai.PermissionDeniedError):
        sdk(world.base, world.secret["a"]).get("/organization/projects", cast_to=object)


def test_a_revoke_on_one_api_process_holds_on_the_other_within_a_second(world):
    project_b = world.projects["team-b"]["id"]
    with http(world, world.secret["admin"]) as admin:
        made = admin.post(
            f"/v1/organization/projects/{project_b}/api_keys", json={"name": "short-lived"}
        )
        assert made.status_code == 200, made.text
        key = made.json()
        assert key["value"].startswith("sk-proj-") and key["role"] == "member"
        listed = admin.get(f"/v1/organization/projects/{project_b}/api_keys").json()["data"]
        assert key["id"] in {k["id"] for k in listed}
        assert all(k["value"] is None for k in listed)  # shown once, at creation
        with http(world, key["value"], base=world.base2) as other:
            assert other.get("/v1/files").status_code == 200
            revoked = admin.delete(f"/v1/organization/projects/{project_b}/api_keys/{key['id']}")
            assert revoked.status_code == 200 and revoked.json()["deleted"] is True
            start = time.monotonic()
            status = wait_for(
                lambda: other.get("/v1/files").status_code,
                lambda s: s == 401,
                seconds=1.0,
                interval=0.02,
            )
            assert status == 401, "the other API process still accepts a revoked key"
            assert time.monotonic() - start < 1.0


def test_the_legacy_key_is_a_member_of_default_and_send_task_picks_a_project(world, team_a):
    """A service with only Celery submits with and without a project; the legacy key sees
    the default project's job, B's key the job submitted for team-b, neither A's."""
    script = """
import json, sys
from celery import Celery
app = Celery(broker=sys.argv[1], backend=sys.argv[1])
rows = json.loads(sys.argv[2])
ids = []
for project in (None, "team-b"):
    payload = {"model": "minilm", "triplets": rows, "epochs": 1, "batch_size": 5}
    if project:
        payload["project"] = project
    reply = app.send_task("embedding.finetune_request", kwargs=payload, queue="cpu").get(timeout=120)
    ids.append(reply["job_id"])
print(json.dumps(ids))
"""
    rows = [{"anchor": a, "positive": p, "negative": n} for a, p, n in SEED_TRIPLETS]
    out = subprocess.run(
        [sys.executable, "-c", script, world.env["EMBEDDING_BROKER_URL"], json.dumps(rows)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    default_job, b_job = json.loads(out.stdout)
    legacy = sdk(world.base, LEGACY_KEY)
    b = sdk(world.base, world.secret["b"])
    legacy_jobs = {j.id for j in legacy.fine_tuning.jobs.list().data}
    b_jobs = {j.id for j in b.fine_tuning.jobs.list().data}
    assert default_job in legacy_jobs and b_job not in legacy_jobs
    assert b_job in b_jobs and default_job not in b_jobs
    assert team_a.job.id not in legacy_jobs | b_jobs
    assert b.fine_tuning.jobs.retrieve(b_job).project_id == world.projects["team-b"]["id"]
    for job_id in (default_job, b_job):  # let the gpu slot go before the next tests
        wait_for(
            lambda j=job_id: (
                legacy.with_options(api_key=world.secret["admin"])
                .fine_tuning.jobs.retrieve(j)
                .status
            ),
            lambda s: s in ("succeeded", "failed", "cancelled"),
        )


def test_admin_keys_see_every_project_and_act_in_one_by_header(world, team_a):
    admin = sdk(world.base, world.secret["admin"])
    everyone = {j.id: j.project_id for j in admin.fine_tuning.jobs.list(limit=100).data}
    assert everyone[team_a.job.id] == world.projects["team-a"]["id"]
    assert any(p == world.projects["team-b"]["id"] for p in everyone.values())
    in_b = sdk(world.base, world.secret["admin"], project=world.projects["team-b"]["id"])
    assert {j.project_id for j in in_b.fine_tuning.jobs.list(limit=100).data} == {
        world.projects["team-b"]["id"]
    }
    with pytest.raises(Exception) as mismatch:  # a project key naming another project
        sdk(world.base, world.secret["a"], project="team-b").files.list()
    assert getattr(mismatch.value, "status_code", None) == 401
    with http(world, world.secret["admin"]) as raw:
        names = {p["name"] for p in raw.get("/v1/organization/projects").json()["data"]}
        assert {"default", "team-a", "team-b"} <= names
        assert raw.post("/v1/organization/projects", json={"name": "team-a"}).status_code == 409
        bad = raw.post("/v1/organization/projects", json={"name": ""})
        assert bad.status_code == 400 and _is_openai_error(bad)
        assert raw.post("/v1/organization/projects", json={"name": "x" * 65}).status_code == 400


def test_archiving_is_refused_while_jobs_run_then_stops_the_projects_keys(world):
    import openai

    admin = http(world, world.secret["admin"])
    made = admin.post("/v1/organization/projects", json={"name": "team-c"}).json()
    key = admin.post(f"/v1/organization/projects/{made['id']}/api_keys", json={"name": "c"})
    c = sdk(world.base, key.json()["value"])
    train = world.tmp / "train.jsonl"
    with train.open("rb") as fh:
        file_id = c.files.create(file=fh, purpose="fine-tune").id
    job = c.fine_tuning.jobs.create(
        model="minilm", training_file=file_id, hyperparameters={"n_epochs": 500, "batch_size": 1}
    )
    refused = admin.post(f"/v1/organization/projects/{made['id']}/archive")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "project_busy"
    cli_refused = cli(world.env, "projects", "archive", "team-c")
    assert cli_refused.returncode != 0 and "cancel them first" in cli_refused.stderr
    c.fine_tuning.jobs.cancel(job.id)
    wait_for(lambda: c.fine_tuning.jobs.retrieve(job.id).status, lambda s: s == "cancelled")
    archived = admin.post(f"/v1/organization/projects/{made['id']}/archive")
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    with pytest.raises(openai.AuthenticationError):
        c.files.list()
    admin.close()


def test_every_change_names_its_key_id_and_no_secret_is_kept_anywhere(world, team_a):
    audit = json.loads(cli(world.env, "audit", "--limit", "500", "--json").stdout)
    by_action = {}
    for row in audit:
        by_action.setdefault(row["action"], []).append(row)
    a_id = world.keys["a"]["id"]
    assert any(r["actor"] == a_id for r in by_action["fine_tuning.job.create"])
    assert any(r["actor"] == a_id for r in by_action["file.create"])
    assert any(r["actor"] == world.keys["admin"]["id"] for r in by_action["api_key.revoke"])
    assert any(r["actor"] == "cli" for r in by_action["project.create"])
    events = team_a.client.fine_tuning.jobs.list_events(team_a.job.id, limit=100).data
    created = [e for e in events if e.message == "Created fine-tuning job"]
    assert created and created[0].data["actor"] == a_id
    with http(world, world.secret["admin"]) as admin:
        logs = admin.get("/v1/organization/audit_logs", params={"limit": 1000}).json()["data"]
        assert any(e["actor"]["api_key"]["id"] == a_id for e in logs)

    dump = subprocess.run(
        [str(_pg_bin() / "pg_dump"), "--data-only", world.db_url.replace("+psycopg", "")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dump.returncode == 0, dump.stderr
    assert world.keys["a"]["redacted"] in dump.stdout  # the dump is of the right database
    texts = {"database": dump.stdout}
    texts.update({path.name: path.read_text(errors="replace") for path in world.logs})
    for name, secret in world.secret.items():
        for where, text in texts.items():
            assert secret not in text, f"the {name} key's secret is in the {where}"
    assert LEGACY_KEY not in dump.stdout


def test_a_batch_file_naming_another_projects_model_is_404_naming_the_line(world, team_a):
    b = sdk(world.base, world.secret["b"])
    line = {
        "custom_id": "x",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": team_a.ft_model, "input": "def f(): pass"},
    }
    source = b.files.create(file=("b.jsonl", (json.dumps(line) + "\n").encode()), purpose="batch")
    import openai

    with pytest.raises(openai.NotFoundError) as missing:
        b.batches.create(
            input_file_id=source.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    assert "line 1" in missing.value.message


# ------------------------------------------------------------------ the embedded default
def test_the_wall_holds_on_the_embedded_default_with_sqlite(tmp_path):
    """No broker, no PostgreSQL: `embedctl serve` alone, its record in SQLite."""
    env = service_env(f"sqlite:///{tmp_path / 'embedding.db'}", None, tmp_path / "artifacts")
    assert cli(env, "db", "upgrade").returncode == 0
    cli_json(env, "projects", "create", "one")
    cli_json(env, "projects", "create", "two")
    one = cli_json(env, "keys", "create", "--project", "one", "--name", "a")["key"]
    two = cli_json(env, "keys", "create", "--project", "two", "--name", "b")["key"]
    import openai

    with api_server(env, tmp_path / "api.log") as base:
        mine, theirs = sdk(base, one), sdk(base, two)
        row = b'{"anchor": "def f(): pass", "positive": "a function"}\n'
        file_id = mine.files.create(file=("p.jsonl", row), purpose="fine-tune").id
        assert mine.files.retrieve(file_id).id == file_id
        for call in (
            lambda: theirs.files.retrieve(file_id),
            lambda: theirs.files.content(file_id),
            lambda: theirs.files.delete(file_id),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        assert [f.id for f in theirs.files.list().data] == []
        with pytest.raises(openai.AuthenticationError):
            sdk(base, "sk-proj-wrong").files.list()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("projects", "create", "team-dup"), "already exists"),
        (("projects", "create", ""), "project name"),
        (("projects", "create", "x" * 65), "project name"),
        (("projects", "create", "bad name"), "project name"),
        (("keys", "revoke", "key_does_not_exist"), "no API key"),
        (("keys", "create", "--project", "no-such-project", "--name", "n"), "no project"),
        (("keys", "create", "--admin", "--project", "team-dup", "--name", "n"), "--admin"),
        (("keys", "create", "--project", "team-dup", "--name", "n", "--expires-in", "0d"), "0d"),
        (("projects", "archive", "no-such-project"), "no project"),
    ],
)
def test_bad_project_and_key_commands_say_why_and_exit_non_zero(tmp_path, args, said):
    env = service_env(f"sqlite:///{tmp_path / 'embedding.db'}", None, tmp_path / "artifacts")
    assert cli(env, "projects", "create", "team-dup").returncode == 0
    out = cli(env, *args)
    assert out.returncode != 0
    assert said in out.stderr and "Traceback" not in out.stderr

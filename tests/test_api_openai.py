"""The HTTP API with the real ``openai`` SDK as its client, on a real port, with a real
worker on Redis and PostgreSQL: fine-tune, embed with the result, batch, cancel."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from embedding.data.examples import SEED_TRIPLETS, write_examples
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

API_KEY = "sk-test-api-7f3a"
REDIS_DB = 12  # no other test uses it
TEXTS = ["def add(a, b): return a + b", "SELECT name FROM users", "class Cache: pass"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from db import migrate

    tmp = tmp_path_factory.mktemp("api")
    artifacts = tmp / "artifacts"
    artifacts.mkdir()
    with postgres_database("emb_api") as db_url:
        migrate.upgrade(db_url)
        env = service_env(
            db_url,
            redis_url(REDIS_DB),
            artifacts,
            EMBEDDING_API_KEYS=f"other-key,{API_KEY}",
            EMBEDDING_BATCH_CHUNK_TEXTS="4",
            TOKENIZERS_PARALLELISM="false",
        )
        with (
            celery_worker(env, tmp / "worker.log", queues=ALL_QUEUES),
            api_server(env, tmp / "api.log") as base,
        ):
            yield SimpleNamespace(base=base, env=env, tmp=tmp, artifacts=artifacts)


@pytest.fixture(scope="module")
def client(stack):
    from openai import OpenAI

    return OpenAI(base_url=f"{stack.base}/v1", api_key=API_KEY, max_retries=0, timeout=180)


def _wait(fetch, done, seconds: float = 300.0):
    deadline = time.monotonic() + seconds
    while True:
        item = fetch()
        if done(item) or time.monotonic() > deadline:
            return item
        time.sleep(0.5)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _training_file(client, tmp: Path, name: str) -> str:
    path = tmp / name
    write_examples(path, SEED_TRIPLETS)
    with path.open("rb") as fh:
        return client.files.create(file=fh, purpose="fine-tune").id


def test_fine_tune_then_embed_with_the_fine_tuned_model(client, stack, minilm):
    import openai

    file_id = _training_file(client, stack.tmp, "train.jsonl")
    create = dict(
        model="minilm",
        training_file=file_id,
        hyperparameters={"n_epochs": 3, "batch_size": 5, "learning_rate": 1e-4},
        suffix="sdk",
        seed=1,
        extra_body={"loss": "triplet"},
        extra_headers={"Idempotency-Key": "sdk-finetune-1"},
    )
    job = client.fine_tuning.jobs.create(**create)
    assert client.fine_tuning.jobs.create(**create).id == job.id  # same key, same body
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.create(**{**create, "seed": 2})  # same key, another body

    job = _wait(
        lambda: client.fine_tuning.jobs.retrieve(job.id),
        lambda j: j.status in ("succeeded", "failed", "cancelled"),
    )
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:minilm:sdk:{job.id}"
    assert job.training_file == file_id and job.hyperparameters.n_epochs == 3

    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    epochs = [e.data["epoch"] for e in events if e.type == "metrics"]
    assert epochs == [3, 2, 1]  # every epoch once, newest first as OpenAI lists them
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)
    assert events[0].message == "The job has successfully completed"
    assert events[-1].message == "Created fine-tuning job"
    assert all("loss" in e.message for e in events if e.type == "metrics")
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [3, 2, 1]

    reply = client.embeddings.create(model=job.fine_tuned_model, input=TEXTS)
    served = np.array([d.embedding for d in reply.data], dtype=np.float32)
    folder = stack.artifacts / "jobs" / job.id / "model"
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "embed", "--model", str(folder), *TEXTS],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    direct = np.array(json.loads(out.stdout), dtype=np.float32)
    assert served.shape == direct.shape == (3, 384)
    assert _cosines(served, direct).min() >= 0.9999
    # The base model gives other vectors: the fine-tuned weights were really used.
    base = np.array(
        [d.embedding for d in client.embeddings.create(model="minilm", input=TEXTS).data]
    )
    assert _cosines(served, base).min() < 0.9999
    # Real token counts: what the tokenizer makes of the texts, specials included.
    _, report = minilm.prepare(TEXTS)
    assert reply.usage.prompt_tokens == sum(r.tokens_used for r in report) > len(TEXTS)

    listed = [m.id for m in client.models.list().data]
    assert {"minilm", job.fine_tuned_model} <= set(listed)
    assert client.models.retrieve(job.fine_tuned_model).owned_by == "user"


def test_a_batch_runs_in_chunks_and_writes_openai_output(client, stack):
    requests = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "minilm", "input": [f"{t} #{i}" for t in TEXTS[: 1 + i % 3]]},
        }
        for i in range(10)
    ]
    path = stack.tmp / "batch.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    with path.open("rb") as fh:
        source = client.files.create(file=fh, purpose="batch")
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    batch = _wait(
        lambda: client.batches.retrieve(batch.id),
        lambda b: b.status in ("completed", "failed", "cancelled", "expired"),
    )
    assert batch.status == "completed", batch
    assert batch.request_counts.total == batch.request_counts.completed == 10
    assert batch.request_counts.failed == 0 and batch.error_file_id is None
    chunks = sorted((stack.artifacts / "batches" / batch.id).glob("chunk-*.out.jsonl"))
    assert len(chunks) >= 5  # 20 texts at 4 per chunk: never one task for the whole batch

    lines = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(r["custom_id"] for r in requests)
    by_id = {x["custom_id"]: x for x in lines}
    for request in requests[:4]:
        line = by_id[request["custom_id"]]
        assert line["error"] is None and line["response"]["status_code"] == 200
        got = np.array([d["embedding"] for d in line["response"]["body"]["data"]])
        want = client.embeddings.create(model="minilm", input=request["body"]["input"])
        assert _cosines(got, np.array([d.embedding for d in want.data])).min() >= 0.9999
        assert line["response"]["body"]["usage"]["prompt_tokens"] == want.usage.prompt_tokens
    assert batch.id in [b.id for b in client.batches.list().data]


def test_cancel_a_running_job(client, stack):
    file_id = _training_file(client, stack.tmp, "long.jsonl")
    job = client.fine_tuning.jobs.create(
        model="minilm", training_file=file_id, hyperparameters={"n_epochs": 500, "batch_size": 1}
    )
    running = _wait(
        lambda: client.fine_tuning.jobs.retrieve(job.id), lambda j: j.status != "queued"
    )
    assert running.status == "running"
    client.fine_tuning.jobs.cancel(job.id)
    job = _wait(lambda: client.fine_tuning.jobs.retrieve(job.id), lambda j: j.status == "cancelled")
    assert job.status == "cancelled" and job.fine_tuned_model is None
    events = client.fine_tuning.jobs.list_events(job.id, limit=5).data
    assert events[0].message == "The job was cancelled"


def test_keys_are_required_and_probes_are_open(stack):
    import httpx
    import openai

    for key in ("wrong-key", ""):
        bad = openai.OpenAI(base_url=f"{stack.base}/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    anonymous = httpx.get(f"{stack.base}/v1/models")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_api_key"
    assert httpx.get(f"{stack.base}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.base}/ready").json()
    assert ready["status"] == "ready", ready
    assert httpx.get(f"{stack.base}/metrics").status_code == 401
    metrics = httpx.get(f"{stack.base}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert 'embedding_queue_depth{queue="gpu"}' in metrics.text
    assert 'embedding_finetune_jobs{state="succeeded"}' in metrics.text
    assert (
        'embedding_api_requests_total{method="GET",route="/v1/models",status="401"}' in metrics.text
    )


def test_a_job_of_pairs_trains_with_the_code_search_recipe_and_says_so(client, stack):
    """A file of pairs with every setting left "auto": the job records the recipe for pairs
    of that size (its levers included, as job.hyperparameters shows them), and its events
    say what the recipe's preparation did on the worker."""
    from embedding.training.hyperparameters import recipe_for

    pairs = [(a, p) for a, p, _ in SEED_TRIPLETS] + [
        ("Parse a JSON document.", "def parse(text):\n    return json.loads(text)"),
        ("Open a file and read its lines.", "def lines(p):\n    return open(p).readlines()"),
        ("Compute the mean of values.", "def mean(xs):\n    return sum(xs) / len(xs)"),
    ]
    path = stack.tmp / "pairs.jsonl"
    path.write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in pairs))
    with path.open("rb") as fh:
        file_id = client.files.create(file=fh, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="minilm", training_file=file_id, hyperparameters={"n_epochs": 1}
    )
    recipe = recipe_for(2)
    shown = job.hyperparameters
    assert (shown.batch_size, shown.learning_rate) == (recipe["batch_size"], recipe["lr"])
    for lever in ("symmetric_loss", "hard_negatives", "guided_filter", "hard_batches"):
        assert getattr(shown, lever) == recipe[lever], lever
    job = _wait(
        lambda: client.fine_tuning.jobs.retrieve(job.id),
        lambda j: j.status in ("succeeded", "failed", "cancelled"),
    )
    assert job.status == "succeeded", job.error
    said = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    expected = {
        "hard_batches": "hard batches on",
        "hard_negatives": "hard negative(s) per pair",
        "guided_filter": "guided filter on",
    }
    for lever, words in expected.items():
        assert any(words in m for m in said) == bool(recipe[lever]), (lever, said)

"""With the broker away, every submit over the API answers at once, in OpenAI's error shape
where it cannot go on, and records what happened: the real ``openai`` SDK against a real
``embedctl serve`` whose Redis is a closed port.

A batch or an evaluation was sent through the app with the Redis result backend, whose
``send_task`` first subscribes to the result and retried that for 19 s before failing
(``workers.app.publisher``); the SDK retries a 503 twice, so a client waited about a minute
to learn that the broker was down. Nobody waits on those results in the API process: their
progress is in their rows.
"""

from __future__ import annotations

import json
import time

import pytest

from embedding.data.examples import write_examples
from tests.support import api_server, free_port, service_env

pytestmark = pytest.mark.integration

# The broker refuses in ~0.6 s; the result subscription's retries took 19 s.
ANSWER_WITHIN_S = 8.0
PAIRS = [("def add(a, b)", "return a + b"), ("SELECT name", "FROM users WHERE id = 1")]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from openai import OpenAI

    from db import migrate

    tmp = tmp_path_factory.mktemp("broker_down")
    database = f"sqlite:///{tmp / 'api.db'}"
    migrate.upgrade(database)
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = service_env(database, closed, tmp)
    with api_server(env, tmp / "api.log") as base:
        yield OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120), tmp


def _timed(call):
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except Exception as exc:  # the SDK's error, kept to be looked at
        return exc, time.monotonic() - started


def test_a_batch_is_refused_at_once_and_recorded_failed(client):
    import openai

    sdk, tmp = client
    path = tmp / "batch.jsonl"
    line = {"method": "POST", "url": "/v1/embeddings", "body": {"model": "minilm", "input": "x"}}
    path.write_text(json.dumps({"custom_id": "r1", **line}) + "\n")
    with path.open("rb") as fh:
        source = sdk.files.create(file=fh, purpose="batch")  # no broker needed for a file
    error, took = _timed(
        lambda: sdk.batches.create(
            input_file_id=source.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    )
    assert isinstance(error, openai.APIStatusError) and error.status_code == 503, error
    assert error.body["code"] == "broker_unavailable", error.body
    assert took < ANSWER_WITHIN_S, f"answered after {took:.1f} s"
    (batch,) = sdk.batches.list().data
    assert batch.status == "failed" and batch.errors.data[0].code == "broker_unavailable", batch


def test_an_evaluation_is_refused_at_once_and_recorded_failed(client):
    import openai

    sdk, tmp = client
    path = tmp / "pairs.jsonl"
    write_examples(path, PAIRS)
    with path.open("rb") as fh:
        data = sdk.files.create(file=fh, purpose="fine-tune")
    body = {"model_a": "minilm", "model_b": "minilm", "data_file": data.id, "n_resamples": 100}
    error, took = _timed(lambda: sdk.post("/evaluations", body=body, cast_to=object))
    assert isinstance(error, openai.APIStatusError) and error.status_code == 503, error
    assert error.body["code"] == "broker_unavailable", error.body
    assert took < ANSWER_WITHIN_S, f"answered after {took:.1f} s"
    listed = sdk.get("/evaluations", cast_to=object)
    (evaluation,) = listed["data"]
    assert evaluation["status"] == "failed" and "broker unavailable" in evaluation["error"], listed


def test_a_fine_tune_job_waits_in_the_outbox_and_is_answered_at_once(client):
    sdk, tmp = client
    path = tmp / "train.jsonl"
    write_examples(path, [("a query", "a document", "another document")] * 3)
    with path.open("rb") as fh:
        training = sdk.files.create(file=fh, purpose="fine-tune")
    job, took = _timed(
        lambda: sdk.fine_tuning.jobs.create(model="minilm", training_file=training.id)
    )
    assert not isinstance(job, Exception), job
    assert job.status == "queued", job  # recorded; the relay sends it once the broker is back
    assert took < ANSWER_WITHIN_S, f"answered after {took:.1f} s"

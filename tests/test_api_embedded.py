"""The HTTP API on the embedded default (no broker: the in-process worker and SQLite), on a
real port: every bad input refused with the right status in OpenAI's error shape, the
schema held to by property-based tests, a fine-tune through the ``openai`` SDK, the jobs
page in headless Chromium, and an A/B evaluation (our route: httpx)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from db.repo import ALL_PROJECTS
from embedding.data.examples import SEED_TRIPLETS
from tests.support import free_port

pytestmark = pytest.mark.slow

CHARS_CAP, TEXTS_CAP, BODY_CAP, UPLOAD_CAP = 1000, 8, 200_000, 100_000


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    import uvicorn

    from core.config import get_settings

    tmp = tmp_path_factory.mktemp("embedded-api")
    saved = {k: v for k, v in os.environ.items() if k.startswith("EMBEDDING_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(
        {
            "EMBEDDING_DATABASE_URL": f"sqlite:///{tmp / 'embedding.db'}",
            "EMBEDDING_ARTIFACTS_DIR": str(tmp / "artifacts"),
            "EMBEDDING_MODEL_ROOTS": f'["{tmp / "artifacts"}"]',
            "EMBEDDING_MAX_CHARS_PER_TEXT": str(CHARS_CAP),
            "EMBEDDING_MAX_TEXTS_PER_REQUEST": str(TEXTS_CAP),
            "EMBEDDING_API_MAX_BODY_BYTES": str(BODY_CAP),
            "EMBEDDING_API_MAX_UPLOAD_BYTES": str(UPLOAD_CAP),
        }
    )
    get_settings.cache_clear()
    from api.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API did not start"
    try:
        yield SimpleNamespace(base=f"http://127.0.0.1:{port}", tmp=tmp)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        for key in [k for k in os.environ if k.startswith("EMBEDDING_")]:
            del os.environ[key]
        os.environ.update(saved)
        get_settings.cache_clear()


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


TRIPLETS = _jsonl(
    [dict(zip(("anchor", "positive", "negative"), t, strict=True)) for t in SEED_TRIPLETS]
)
PAIRS = _jsonl([{"query": a, "document": p} for a, p, _ in SEED_TRIPLETS])


def _batch_line(**over) -> dict:
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "minilm", "input": "x"},
    }
    return {**line, **over}


@pytest.fixture(scope="module")
def files(api):
    """A good training file (triplets), a file of pairs and a good batch file, uploaded once."""
    ids = {}
    uploads = (
        ("fine-tune", "fine-tune", TRIPLETS),
        ("pairs", "fine-tune", PAIRS),
        ("batch", "batch", _jsonl([_batch_line()])),
    )
    for name, purpose, content in uploads:
        reply = httpx.post(
            f"{api.base}/v1/files",
            files={"file": ("f.jsonl", content)},
            data={"purpose": purpose},
        )
        assert reply.status_code == 200, reply.text
        ids[name] = reply.json()["id"]
    return ids


EMBED = "/v1/embeddings"
JOBS = "/v1/fine_tuning/jobs"
EVALS = "/v1/evaluations"
# (name, method, path, json body, status, error param or code it names)
JSON_CASES = [
    ("empty input list", "POST", EMBED, {"input": [], "model": "minilm"}, 400, "input"),
    (
        "too many inputs",
        "POST",
        EMBED,
        {"input": ["a"] * (TEXTS_CAP + 1), "model": "minilm"},
        400,
        "input",
    ),
    (
        "input over the char cap",
        "POST",
        EMBED,
        {"input": "x" * (CHARS_CAP + 1), "model": "minilm"},
        400,
        "input",
    ),
    ("token arrays", "POST", EMBED, {"input": [1, 2, 3], "model": "minilm"}, 400, "input"),
    ("no model", "POST", EMBED, {"input": "x"}, 400, "model"),
    ("unknown field", "POST", EMBED, {"input": "x", "model": "minilm", "top_k": 3}, 400, "top_k"),
    (
        "bad encoding",
        "POST",
        EMBED,
        {"input": "x", "model": "minilm", "encoding_format": "int8"},
        400,
        "encoding_format",
    ),
    (
        "dimensions 0",
        "POST",
        EMBED,
        {"input": "x", "model": "minilm", "dimensions": 0},
        400,
        "dimensions",
    ),
    (
        "no Matryoshka",
        "POST",
        EMBED,
        {"input": "x", "model": "minilm", "dimensions": 64},
        400,
        "dimensions",
    ),
    (
        "unknown model",
        "POST",
        EMBED,
        {"input": "x", "model": "no-such-model"},
        404,
        "model_not_found",
    ),
    (
        "folder outside the roots",
        "POST",
        EMBED,
        {"input": "x", "model": "/etc"},
        400,
        "model_not_allowed",
    ),
    (
        "unknown fine-tuned id",
        "POST",
        EMBED,
        {"input": "x", "model": "ft:minilm:x:0d9a4ac2-96b5-4a53-8d5c-2f5f1c1e1f6e"},
        404,
        "model_not_found",
    ),
    (
        "unknown training file",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "file-nope"},
        404,
        "training_file",
    ),
    (
        "unknown base model",
        "POST",
        JOBS,
        {"model": "no-such-model", "training_file": "FT"},
        404,
        "model_not_found",
    ),
    (
        "epochs 0",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "FT", "hyperparameters": {"n_epochs": 0}},
        400,
        "invalid_value",
    ),
    (
        "epochs over 1000",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "FT", "hyperparameters": {"n_epochs": 1001}},
        400,
        "invalid_value",
    ),
    (
        "mini-batch size 0",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "FT", "hyperparameters": {"mini_batch_size": 0}},
        400,
        "invalid_value",
    ),
    (
        "matryoshka on a model without Matryoshka dims",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "FT", "hyperparameters": {"matryoshka": True}},
        400,
        "invalid_value",
    ),
    (
        "negative lr",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "FT", "hyperparameters": {"learning_rate": -1}},
        400,
        "invalid_value",
    ),
    (
        "lr over 1",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "FT", "hyperparameters": {"learning_rate": 2}},
        400,
        "invalid_value",
    ),
    (
        "batch size 0",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "FT", "hyperparameters": {"batch_size": 0}},
        400,
        "invalid_value",
    ),
    (
        "unknown loss",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "FT", "loss": "cosine"},
        400,
        "loss",
    ),
    (
        "bad suffix",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "FT", "suffix": "no spaces!"},
        400,
        "suffix",
    ),
    (
        "batch file for training",
        "POST",
        JOBS,
        {"model": "minilm", "training_file": "BATCH"},
        400,
        "training_file",
    ),
    ("unknown job", "GET", f"{JOBS}/0d9a4ac2-96b5-4a53-8d5c-2f5f1c1e1f6e", None, 404, "not_found"),
    ("job id not a uuid", "GET", f"{JOBS}/ftjob-abc", None, 404, "not_found"),
    (
        "unknown batch file",
        "POST",
        "/v1/batches",
        {"input_file_id": "file-nope", "endpoint": EMBED, "completion_window": "24h"},
        404,
        "input_file_id",
    ),
    (
        "batch of chat",
        "POST",
        "/v1/batches",
        {"input_file_id": "BATCH", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        400,
        "endpoint",
    ),
    (
        "training file for a batch",
        "POST",
        "/v1/batches",
        {"input_file_id": "FT", "endpoint": EMBED, "completion_window": "24h"},
        400,
        "input_file_id",
    ),
    ("unknown check", "POST", "/v1/validations", {"checks": ["nope"]}, 400, "checks"),
    (
        "evaluation of an unknown file",
        "POST",
        EVALS,
        {"model_a": "minilm", "model_b": "minilm", "data_file": "file-nope"},
        404,
        "data_file",
    ),
    (
        "evaluation on triplets",
        "POST",
        EVALS,
        {"model_a": "minilm", "model_b": "minilm", "data_file": "FT"},
        400,
        "data_file",
    ),
    (
        "evaluation on a batch file",
        "POST",
        EVALS,
        {"model_a": "minilm", "model_b": "minilm", "data_file": "BATCH"},
        400,
        "data_file",
    ),
    (
        "evaluation of an unknown model",
        "POST",
        EVALS,
        {"model_a": "minilm", "model_b": "no-such-model", "data_file": "PAIRS"},
        404,
        "model_not_found",
    ),
    (
        "evaluation of a folder outside the roots",
        "POST",
        EVALS,
        {"model_a": "/etc", "model_b": "minilm", "data_file": "PAIRS"},
        400,
        "model_not_allowed",
    ),
    (
        "evaluation with too few resamples",
        "POST",
        EVALS,
        {"model_a": "minilm", "model_b": "minilm", "data_file": "PAIRS", "n_resamples": 10},
        400,
        "n_resamples",
    ),
    (
        "evaluation with a negative seed",
        "POST",
        EVALS,
        {"model_a": "minilm", "model_b": "minilm", "data_file": "PAIRS", "seed": -1},
        400,
        "seed",
    ),
    (
        "evaluation with an unknown field",
        "POST",
        EVALS,
        {"model_a": "minilm", "model_b": "minilm", "data_file": "PAIRS", "k": 5},
        400,
        "k",
    ),
    ("evaluation without model_b", "POST", EVALS, {"model_a": "minilm"}, 400, "model_b"),
    (
        "unknown evaluation",
        "GET",
        f"{EVALS}/0d9a4ac2-96b5-4a53-8d5c-2f5f1c1e1f6e",
        None,
        404,
        "not_found",
    ),
    ("evaluation id not a uuid", "GET", f"{EVALS}/eval-1", None, 404, "not_found"),
    ("evaluations after an unknown id", "GET", f"{EVALS}?after=nope", None, 404, "after"),
    ("unknown route", "GET", "/v1/chat/completions", None, 404, "unknown_url"),
    ("wrong method", "DELETE", "/v1/embeddings", None, 405, "method_not_allowed"),
    ("spec not deletable", "DELETE", "/v1/models/minilm", None, 403, "model_not_deletable"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "names"),
    [pytest.param(*case[1:], id=case[0]) for case in JSON_CASES],
)
def test_bad_requests_are_refused_in_the_openai_shape(
    api, files, method, path, body, status, names
):
    if body is not None:
        body = json.loads(
            json.dumps(body)
            .replace('"FT"', json.dumps(files["fine-tune"]))
            .replace('"PAIRS"', json.dumps(files["pairs"]))
            .replace('"BATCH"', json.dumps(files["batch"]))
        )
    reply = httpx.request(method, f"{api.base}{path}", json=body, timeout=60)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert names in (error["param"], error["code"]), error


UPLOAD_CASES = [
    (
        "mixed pairs and triplets",
        "fine-tune",
        _jsonl(
            [{"anchor": "a", "positive": "b", "negative": "c"}, {"anchor": "a", "positive": "b"}]
        ),
        400,
        "line 2",
    ),
    (
        "empty text",
        "fine-tune",
        _jsonl([{"anchor": "a", "positive": " ", "negative": "c"}]),
        400,
        "line 1",
    ),
    (
        "not UTF-8",
        "fine-tune",
        b'{"anchor": "a", "positive": "b"}\n{"anchor": "\xff"}\n',
        400,
        "line 2",
    ),
    ("not JSON", "fine-tune", b'{"anchor": "a", "positive": "b"}\n\n{oops\n', 400, "line 3"),
    (
        "text over the char cap",
        "fine-tune",
        _jsonl([{"anchor": "a" * (CHARS_CAP + 1), "positive": "b"}]),
        400,
        "line 1",
    ),
    ("empty file", "fine-tune", b"\n\n", 400, "no rows"),
    (
        "n-tuples of two widths",
        "fine-tune",
        _jsonl(
            [
                {"anchor": "a", "positive": "b", "negatives": ["c", "d"]},
                {"anchor": "a", "positive": "b", "negatives": ["c"]},
            ]
        ),
        400,
        "line 2: mixes triplets and 2-negative n-tuples",
    ),
    (
        "negatives not a list",
        "fine-tune",
        _jsonl([{"anchor": "a", "positive": "b", "negatives": "c"}]),
        400,
        "line 1",
    ),
    (
        "batch to another url",
        "batch",
        _jsonl([_batch_line(url="/v1/chat/completions")]),
        400,
        "line 1",
    ),
    ("batch custom_id twice", "batch", _jsonl([_batch_line(), _batch_line()]), 400, "line 2"),
    (
        "batch body refused",
        "batch",
        _jsonl([_batch_line(body={"model": "minilm", "input": []})]),
        400,
        "line 1",
    ),
    ("unknown purpose", "assistants", TRIPLETS, 400, "purpose"),
    ("over the upload cap", "fine-tune", b" " * (UPLOAD_CAP + 1), 413, "bytes"),
]


@pytest.mark.parametrize(
    ("purpose", "content", "status", "says"),
    [pytest.param(*case[1:], id=case[0]) for case in UPLOAD_CASES],
)
def test_bad_uploads_are_refused_naming_the_line(api, purpose, content, status, says):
    reply = httpx.post(
        f"{api.base}/v1/files", files={"file": ("f.jsonl", content)}, data={"purpose": purpose}
    )
    assert reply.status_code == status, reply.text
    message = reply.json()["error"]["message"]
    assert says in message
    assert ".jsonl" not in message and "file-" not in message  # never the server's path


def test_an_n_tuple_training_file_is_accepted_with_its_row_count(api):
    """Several mined negatives per pair (``embedctl data mine-negatives --format n-tuple``)
    upload as a fine-tune file like triplets do."""
    rows = [
        {"anchor": f"query {i}", "positive": f"def f{i}(): pass", "negatives": ["x = 1", "y()"]}
        for i in range(3)
    ]
    reply = httpx.post(
        f"{api.base}/v1/files",
        files={"file": ("tuples.jsonl", _jsonl(rows))},
        data={"purpose": "fine-tune"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["rows"] == 3


def test_a_body_over_the_cap_is_413_before_it_is_read(api):
    reply = httpx.post(
        f"{api.base}{EMBED}",
        content=b'{"input": "' + b"x" * BODY_CAP + b'", "model": "minilm"}',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"
    bad_json = httpx.post(
        f"{api.base}{EMBED}", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"


def test_fine_tune_and_embed_through_the_sdk_embedded_and_the_jobs_page(api, files):
    """The embedded default serves the same routes: SDK fine-tune, embed with the result,
    then the jobs page (headless Chromium) shows the job with its loss curve."""
    import numpy as np
    from openai import OpenAI

    client = OpenAI(base_url=f"{api.base}/v1", api_key="unused", max_retries=0, timeout=180)
    job = client.fine_tuning.jobs.create(
        model="minilm",
        training_file=files["fine-tune"],
        validation_file=files["fine-tune"],  # picks the best epoch, which the page shows
        hyperparameters={"n_epochs": 2, "batch_size": 5, "learning_rate": 1e-4},
        suffix="embedded",
    )
    deadline = time.monotonic() + 300
    while job.status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    served = client.embeddings.create(model=job.fine_tuned_model, input=["def f(): pass", "x"])
    floats = client.embeddings.create(
        model=job.fine_tuned_model, input=["def f(): pass", "x"], encoding_format="float"
    )
    a = np.array([d.embedding for d in served.data])  # the SDK asked for base64 and decoded it
    b = np.array([d.embedding for d in floats.data])
    assert a.shape == (2, 384) and np.abs(a - b).max() < 1e-6
    assert served.usage.prompt_tokens == floats.usage.prompt_tokens > 2

    chromium = shutil.which("chromium")
    assert chromium, "make test installs Debian's chromium (scripts/ensure_chromium.sh)"
    shot = Path(api.tmp) / "jobs.png"
    common = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={api.tmp / 'chrome'}",
        "--virtual-time-budget=6000",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", f"{api.base}/"], capture_output=True, text=True, timeout=120
    )
    page = dom.stdout
    assert f'data-job="{job.id}"' in page, page[-2000:] + dom.stderr[-2000:]
    assert 'data-points="2"' in page and "succeeded" in page
    assert 'data-refreshed="' in page  # the polling script ran and redrew the table
    assert job.fine_tuned_model in page
    best = job.model_extra["result"]["best_epoch"]  # the SDK keeps our extra field
    assert best in (1, 2) and f'data-best-epoch="{best}"' in page
    # The loss chart carries the validation metric per epoch, and a dot on the best epoch.
    metric = job.model_extra["result"]["selected_by"]
    points = client.fine_tuning.jobs.checkpoints.list(job.id).data[::-1]  # oldest first
    shown = ",".join(f"{p.metrics.model_extra['eval'][metric]:.4f}" for p in points)
    chart = f'class="metric" data-metric="{metric}" data-points="2" data-values="{shown}"'
    assert chart in page, page[-3000:]
    assert f'<circle class="best" data-epoch="{best}"' in page
    subprocess.run(
        [*common, "--window-size=1280,800", f"--screenshot={shot}", f"{api.base}/"],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_an_evaluation_of_minilm_against_itself(api, files):
    """POST records it and the in-process worker runs it: the same model twice differs by
    exactly nothing, so the verdict is no significant difference with a [0, 0] interval."""
    body = {"model_a": "minilm", "model_b": "minilm", "data_file": files["pairs"], "seed": 5}
    created = httpx.post(f"{api.base}{EVALS}", json=body, timeout=60)
    assert created.status_code == 200, created.text
    evaluation = created.json()
    assert evaluation["object"] == "evaluation" and evaluation["trigger"] == "api"
    assert evaluation["status"] in ("queued", "running", "succeeded")
    assert (evaluation["n_resamples"], evaluation["seed"]) == (1000, 5)
    deadline = time.monotonic() + 120
    while evaluation["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        evaluation = httpx.get(f"{api.base}{EVALS}/{evaluation['id']}", timeout=30).json()
    assert evaluation["status"] == "succeeded", evaluation
    assert evaluation["verdict"] == "no significant difference"
    assert evaluation["primary_metric"] == "mrr@10"
    assert set(evaluation["differences"]) == {"mrr@10", "recall@1", "ndcg@10"}
    for interval in evaluation["differences"].values():
        assert interval == {"b_minus_a": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert evaluation["metrics_a"] == evaluation["metrics_b"]
    assert evaluation["data"]["file"] == files["pairs"]
    assert evaluation["data"]["rows"] == len(SEED_TRIPLETS)
    assert evaluation["data"]["sha256"] == hashlib.sha256(PAIRS).hexdigest()
    assert evaluation["model_a"] == {"name": "minilm", "loaded": "minilm", "version": None}
    listed = httpx.get(f"{api.base}{EVALS}", params={"limit": 1}, timeout=30).json()
    assert listed["first_id"] == evaluation["id"] and listed["data"][0] == evaluation


def test_the_published_schema_holds_under_generated_requests(api):
    """schemathesis: no 5xx for any generated request, and every answer matches the
    published schema. POST /v1/validations is left out: each accepted call starts the full
    validation chord (a minute of worker time); so are the POSTs that issue API keys: the
    first key issued turns this open (keyless, loopback) API into one that asks every later
    test for a key."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{api.base}/openapi.json")
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance]
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() == "POST" and (
            operation.path == "/v1/validations" or operation.path.endswith("api_keys")
        ):
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case):
            case.call_and_validate(base_url=api.base, checks=checks)

        run()
        tested += 1
    assert tested >= 20


def test_a_fine_tuned_matryoshka_model_keeps_what_serving_needs(api, files):
    """Through the SDK: a base with Matryoshka dims, prompts and a default task is fine-tuned;
    the fine-tune lists the same dims, accepts `dimensions=` as its base does, refuses a width
    it does not have, and its folder keeps the prompts, default task and precision policy."""
    import json as jsonlib

    import numpy as np
    from openai import BadRequestError, OpenAI

    from embedding.models.specs import spec_from_folder
    from tests.tiny_models import build_tiny_bert, write_st_pooling
    from workers.serving.model_names import checked_model_name

    base = build_tiny_bert(api.tmp / "artifacts" / "bases" / "tiny-matryoshka", hidden=32)
    prompts = {"query": "query: ", "document": "passage: "}
    write_st_pooling(base, "mean", 32, prompts=prompts)
    st = jsonlib.loads((base / "config_sentence_transformers.json").read_text())
    st["default_prompt_name"] = "query"
    (base / "config_sentence_transformers.json").write_text(jsonlib.dumps(st))
    policy = {"matryoshka_dims": [8, 16], "default_precision": "fp32", "bf16_allowed": False}
    (base / "embedding_spec.json").write_text(jsonlib.dumps(policy))
    base_spec = spec_from_folder(base)
    assert base_spec.matryoshka_dims == (8, 16) and base_spec.default_task == "query"

    client = OpenAI(base_url=f"{api.base}/v1", api_key="unused", max_retries=0, timeout=180)
    job = client.fine_tuning.jobs.create(
        model=str(base),
        training_file=files["fine-tune"],
        hyperparameters={"n_epochs": 1, "batch_size": 5, "learning_rate": 1e-4},
        suffix="mat",
    )
    deadline = time.monotonic() + 300
    while job.status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    ft = job.fine_tuned_model

    listed = client.models.retrieve(ft)
    assert listed.model_extra["dimensions"] == 32
    assert listed.model_extra["matryoshka_dimensions"] == [8, 16]
    for width in (8, 16, 32):
        reply = client.embeddings.create(model=ft, input=["def f(): pass"], dimensions=width)
        vector = np.array(reply.data[0].embedding)
        assert vector.shape == (width,) and abs(np.linalg.norm(vector) - 1) < 1e-4
    with pytest.raises(BadRequestError, match="dimensions=12"):
        client.embeddings.create(model=ft, input=["x"], dimensions=12)

    tuned = spec_from_folder(checked_model_name(ft, scope=ALL_PROJECTS))
    for field in (
        "matryoshka_dims", "prompts", "default_task", "pooling", "dim", "max_tokens",
        "normalize", "default_precision", "bf16_allowed",
    ):  # fmt: skip
        assert getattr(tuned, field) == getattr(base_spec, field), field

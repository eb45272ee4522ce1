"""Bad input, one table: every kind gets a clear error naming what was wrong, a job that
exists ends ``failed`` with that reason, and nothing half-written is left behind.

Kinds run through the real path they would take: the payload schema, the
``embedding.finetune_request`` task body, the job life cycle (claim -> load -> train) on a
SQLite database, or the model loader.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tiny_models import MINILM_DIR
from workers.schemas import FinetuneRequest, PayloadError, parse

T = {"anchor": "def a", "positive": "def b", "negative": "SELECT 1"}
OK = {"model": "minilm", "triplets": [T]}


@dataclass
class Case:
    kind: str
    layer: str  # payload | task | job | load
    value: object
    message: str


CASES = [
    # --- payloads (the schema every task and the client use)
    Case("not an object", "payload", [1, 2], "must be a JSON object"),
    Case("null payload", "payload", None, "must be a JSON object"),
    Case("missing model", "payload", {"triplets": [T]}, "model: Field required"),
    Case("no data", "payload", {"model": "minilm"}, "exactly one of triplets, pairs or dataset"),
    Case(
        "two data sources",
        "payload",
        {**OK, "pairs": [{"anchor": "a", "positive": "b"}]},
        "exactly one",
    ),
    Case(
        "extra field",
        "payload",
        {**OK, "learning_rate": 0.1},
        "learning_rate: Extra inputs are not permitted",
    ),
    Case("empty triplets", "payload", {"model": "minilm", "triplets": []}, "triplets is empty"),
    Case(
        "missing negative",
        "payload",
        {"model": "minilm", "triplets": [{"anchor": "a", "positive": "b"}]},
        "negative: Field required",
    ),
    Case(
        "blank anchor",
        "payload",
        {"model": "minilm", "triplets": [{**T, "anchor": "  "}]},
        "anchor is empty",
    ),
    Case(
        "non-string text",
        "payload",
        {"model": "minilm", "triplets": [{**T, "positive": 7}]},
        "positive: Input should be a valid string",
    ),
    Case(
        "triplet as a list",
        "payload",
        {"model": "minilm", "triplets": [["a", "b", "c"]]},
        "triplets.0",
    ),
    Case(
        "text past the size cap",
        "payload",
        {"model": "minilm", "triplets": [{**T, "anchor": "x" * 100_001}]},
        "more than the cap",
    ),
    Case(
        "epochs zero",
        "payload",
        {**OK, "epochs": 0},
        "epochs: Input should be greater than or equal to 1",
    ),
    Case("epochs negative", "payload", {**OK, "epochs": -3}, "epochs"),
    Case(
        "epochs as a string",
        "payload",
        {**OK, "epochs": "3"},
        "epochs: Input should be a valid integer",
    ),
    Case("lr zero", "payload", {**OK, "lr": 0.0}, "lr: Input should be greater than 0"),
    Case("lr negative", "payload", {**OK, "lr": -1e-4}, "lr: Input should be greater than 0"),
    Case(
        "lr NaN",
        "payload",
        {**OK, "lr": float("nan")},
        "lr: Input should be a finite number",
    ),
    Case(
        "lr infinite", "payload", {**OK, "lr": float("inf")}, "lr: Input should be a finite number"
    ),
    Case(
        "batch size zero",
        "payload",
        {**OK, "batch_size": 0},
        "batch_size: Input should be greater than or equal to 1",
    ),
    Case(
        "unknown loss",
        "payload",
        {**OK, "loss": "contrastive"},
        "loss: Input should be 'triplet', 'mnrl' or 'cached_mnrl'",
    ),
    Case(
        "pairs with triplet loss",
        "payload",
        {"model": "minilm", "pairs": [{"anchor": "a", "positive": "b"}], "loss": "triplet"},
        "needs triplets",
    ),
    Case("empty model name", "payload", {**OK, "model": ""}, "model"),
    Case(
        "margin NaN",
        "payload",
        {**OK, "margin": float("nan")},
        "margin: Input should be a finite number",
    ),
    Case(
        "NUL in a text",
        "payload",
        {**OK, "triplets": [{"anchor": "a\x00", "positive": "b", "negative": "c"}]},
        "triplets.0.anchor: Value error, anchor contains a NUL character",
    ),
    Case(
        "lone surrogate in a text",
        "payload",
        {**OK, "triplets": [{"anchor": "a", "positive": "b", "negative": "\udc80"}]},
        "triplets.0.negative: Value error, negative contains a lone surrogate",
    ),
    Case("suffix with a space", "payload", {**OK, "suffix": "my model"}, "suffix"),
    Case("empty idempotency key", "payload", {**OK, "idempotency_key": ""}, "idempotency_key"),
    # --- the finetune_request task body (what send_task reaches)
    Case("malformed JSON message", "task", '{"model": "minilm", "triplets": [', "not valid JSON"),
    Case("oversized JSON message", "task", "oversized", "more than the cap"),
    Case("unknown model", "task", {**OK, "model": "no-such-model"}, "UnknownModel"),
    Case(
        "model path outside the roots", "task", {**OK, "model": "/etc"}, "outside the allowed roots"
    ),
    Case(
        "model path escaping with ../",
        "task",
        {**OK, "model": "ROOT/../../etc"},
        "outside the allowed roots",
    ),
    # --- jobs that exist and fail at run time
    Case("pickle (.bin) weights", "job", "bin-model", "UnsafeWeightsFormat"),
    Case("safetensors header past the end", "job", "header-past-end", "runs past the end"),
    Case("safetensors header not JSON", "job", "header-not-json", "not valid JSON"),
    Case("safetensors offsets out of range", "job", "offsets-out-of-range", "out of range"),
    Case("safetensors overlapping offsets", "job", "overlapping", "overlap"),
    Case("safetensors unknown dtype", "job", "unknown-dtype", "unknown dtype"),
    Case("loss goes NaN", "job", "nan-weights", "TrainingDiverged"),
    Case("dataset outside the roots", "job", "dataset-outside", "outside the allowed roots"),
    Case("dataset with a bad line", "job", "dataset-bad-line", ":2: not JSON"),
    Case("model unavailable offline", "job", "hub-offline", "ModelUnavailable"),
    Case("cancelled job", "job", "cancelled", "cancelled"),
]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    from core.config import get_settings
    from db import migrate

    for key in list(os.environ):
        if key.startswith("EMBEDDING_"):
            monkeypatch.delenv(key)
    roots = tmp_path / "models"
    roots.mkdir()
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.setenv("EMBEDDING_DATABASE_URL", url)
    monkeypatch.setenv("EMBEDDING_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("EMBEDDING_MODEL_ROOTS", json.dumps([str(roots)]))
    monkeypatch.setenv("EMBEDDING_MAX_CHARS_PER_TEXT", "1000")
    get_settings.cache_clear()
    migrate.upgrade(url)
    yield tmp_path, roots
    get_settings.cache_clear()


def _model_copy(roots: Path, name: str) -> Path:
    folder = roots / name
    shutil.copytree(MINILM_DIR, folder)
    return folder


def _rewrite_header(path: Path, mutate) -> None:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    new = mutate(header, data)
    if isinstance(new, tuple):
        blob, declared = new
    else:
        blob = json.dumps(new).encode()
        declared = len(blob)
    path.write_bytes(struct.pack("<Q", declared) + blob + data)


def _job_model(kind: str, tmp: Path, roots: Path) -> tuple[str, dict]:
    """The model (and extra request fields) that makes this job fail the way it should."""
    extra: dict = {}
    if kind == "bin-model":
        folder = _model_copy(roots, kind)
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
        return str(folder), extra
    if kind in (
        "header-past-end",
        "header-not-json",
        "offsets-out-of-range",
        "overlapping",
        "unknown-dtype",
    ):
        folder = _model_copy(roots, kind)
        weights = folder / "model.safetensors"

        def mutate(header, data):
            name = next(k for k in header if k != "__metadata__")
            other = next(k for k in header if k not in ("__metadata__", name))
            if kind == "header-past-end":
                blob = json.dumps(header).encode()
                return blob, len(blob) + len(data) + 1000  # under the cap, past the end of the file
            if kind == "header-not-json":
                return b"{" + b"x" * 20, 21
            if kind == "offsets-out-of-range":
                header[name]["data_offsets"][1] = len(data) + 100
            if kind == "overlapping":
                header[other]["data_offsets"] = list(header[name]["data_offsets"])
            if kind == "unknown-dtype":
                header[name]["dtype"] = "Q9"
            return header

        _rewrite_header(weights, mutate)
        return str(folder), extra
    if kind == "nan-weights":
        import torch
        from safetensors.torch import load_file, save_file

        folder = _model_copy(roots, kind)
        tensors = load_file(str(folder / "model.safetensors"))
        key = next(k for k in tensors if k.endswith("LayerNorm.weight"))
        tensors[key] = torch.full_like(tensors[key], float("nan"))
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return str(folder), extra
    if kind == "dataset-outside":
        outside = tmp / "elsewhere.jsonl"
        outside.write_text(json.dumps(T) + "\n")
        return "minilm", {"dataset": str(outside)}
    if kind == "dataset-bad-line":
        bad = roots / "bad.jsonl"
        bad.write_text(json.dumps(T) + "\n{oops\n")
        return "minilm", {"dataset": str(bad)}
    if kind == "hub-offline":
        return "qodo", extra
    return "minilm", extra


def _run(case: Case, tmp: Path, roots: Path) -> tuple[str, str | None]:
    """Returns (error text, job status or None when no job was recorded)."""
    from db import repo
    from db.session import session_scope
    from workers import tasks
    from workers.jobs import finetune_job

    if case.layer == "payload":
        with pytest.raises(PayloadError) as info:
            parse(FinetuneRequest, case.value)
        return str(info.value), None
    if case.layer == "task":
        if case.value == "oversized":
            reply = tasks.finetune_request.run(**{**OK, "triplets": [{**T, "anchor": "y" * 5000}]})
            return reply["error"], None
        if isinstance(case.value, str):
            from kombu.exceptions import DecodeError
            from kombu.serialization import loads

            with pytest.raises(DecodeError) as info:
                loads(case.value, "application/json", "utf-8", accept=["application/json"])
            return f"payload is not valid JSON: {info.value}", None
        payload = dict(case.value)
        payload["model"] = payload["model"].replace("ROOT", str(roots))
        reply = tasks.finetune_request.run(**payload)
        assert reply["status"] == "rejected" and reply["job_id"] is None
        return reply["error"], None
    model, extra = _job_model(case.value, tmp, roots)
    params = {"loss": "triplet", "epochs": 1, "lr": 1e-4, "batch_size": 2, "margin": 1.0, **extra}
    if "dataset" not in extra:
        params["triplets"] = [
            T,
            {"anchor": "class A", "positive": "class B", "negative": "import os"},
        ]
    with session_scope() as session:
        job_id = str(repo.jobs.create_job(session, model, params, project_id="proj_default").id)
    if case.value == "cancelled":
        with session_scope() as session:
            repo.jobs.request_cancel(session, job_id)
            repo.jobs.finish_job(session, job_id, "cancelled", error="cancelled before it started")
        result = finetune_job.run_finetune_job(job_id, hostname="test")
        assert result["status"] == "cancelled"
    else:
        with pytest.raises(Exception):  # noqa: B017 - the job's record is what we check
            finetune_job.run_finetune_job(job_id, hostname="test")
    with session_scope() as session:
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        status, error = job.status, job.error or ""
        versions = session.query(
            __import__("db.models", fromlist=["ModelVersion"]).ModelVersion
        ).count()
    assert versions == 0, "a failed job registered a model version"
    assert not (Path(tmp) / "artifacts" / "jobs" / job_id / "model").exists(), (
        "half-written model left behind"
    )
    return error, status


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input_gets_a_clear_error_and_loses_nothing(case, sandbox):
    tmp, roots = sandbox
    error, job_status = _run(case, tmp, roots)
    assert case.message in error, error
    if case.layer == "job":
        assert job_status == ("cancelled" if case.value == "cancelled" else "failed")


def test_the_table_covers_at_least_thirty_kinds():
    assert len({c.kind for c in CASES}) >= 30

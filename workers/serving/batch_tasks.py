"""Embeddings batches: one task per chunk of requests, the last chunk writes the files.

``embedding.batch_chunk(batch_id, index)`` embeds the requests of one chunk (at most
``EMBEDDING_BATCH_CHUNK_TEXTS`` texts, cut by the API when the batch was created), writes
its output and error lines to ``<artifacts>/batches/<batch id>/`` and records the chunk as
done (once, even when redelivered). The chunk that makes the count complete finalizes:
it joins the chunk files in order into the output and error files, in the line format of
OpenAI's batch API, and records them as files. A batch that is ``cancelling`` has its
remaining chunks skipped and ends ``cancelled`` with what had finished.

The API resolved every model name when the batch was created (``batches.models``), so a
chunk only loads what it is told to, through the same root checks as ``embedding.embed``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from core.config import get_settings
from db import repo
from db.session import session_scope
from workers.app import app
from workers.serving.embed_service import tokens_per_row
from workers.serving.model_cache import model_cache
from workers.serving.model_names import checked_model_name
from workers.tasks import json_vectors

log = logging.getLogger(__name__)

STOPPED = ("cancelling", "cancelled", "failed", "expired")


def batch_dir(batch_id: str) -> Path:
    return Path(get_settings().artifacts_dir).resolve() / "batches" / batch_id


@app.task(name="embedding.batch_chunk", acks_late=True, reject_on_worker_lost=True)
def batch_chunk(batch_id: str, index: int) -> dict[str, Any]:
    with session_scope() as session:
        batch = repo.batches.get_batch(session, batch_id, scope=repo.ALL_PROJECTS)
        if batch is None:
            raise LookupError(f"no batch {batch_id}")
        status, (first, end) = batch.status, batch.chunks[index]
        models = dict(batch.models)
        # The input file is read in the batch's own project (the API checked it was).
        source = repo.files.get_file(
            session, batch.input_file_id, scope=repo.scope.project(batch.project_id)
        )
        chunk_count = len(batch.chunks)
    completed = failed = 0
    if status not in STOPPED and source is not None:
        completed, failed = _run_chunk(batch_id, index, Path(source.path), first, end, models)
    with session_scope() as session:
        done = repo.batches.record_batch_chunk(session, batch_id, index, completed, failed)
    if done == chunk_count:
        finalize(batch_id)
    return {"batch_id": batch_id, "chunk": index, "completed": completed, "failed": failed}


def _requests(path: Path, first: int, end: int) -> list[dict[str, Any]]:
    """Requests ``first`` to ``end - 1`` of the file (blank lines are not requests)."""
    out, index = [], 0
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            if index >= end:
                break
            if index >= first:
                out.append(json.loads(raw.decode("utf-8-sig")))
            index += 1
    return out


def _run_chunk(
    batch_id: str, index: int, path: Path, first: int, end: int, models: dict[str, str]
) -> tuple[int, int]:
    out_lines, err_lines = [], []
    for request in _requests(path, first, end):
        line = _answer(request, models)
        (out_lines if line["response"]["status_code"] == 200 else err_lines).append(line)
    folder = batch_dir(batch_id)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / f"chunk-{index:06d}.out.jsonl", out_lines)
    _write_atomic(folder / f"chunk-{index:06d}.err.jsonl", err_lines)
    return len(out_lines), len(err_lines)


def _answer(request: dict[str, Any], models: dict[str, str]) -> dict[str, Any]:
    """One output line: OpenAI's ``{id, custom_id, response: {status_code, request_id,
    body}, error}``; a request the model refuses is a 400 line for the error file."""
    body = request["body"]
    texts = [body["input"]] if isinstance(body["input"], str) else list(body["input"])
    try:
        # The API resolved every name to what it loads (a spec or a folder) in the batch's
        # project; a folder is confined to the roots again here.
        name = checked_model_name(models[body["model"]], scope=repo.DEFAULT_PROJECT)
        encoder = model_cache().get(name)
        dims = body.get("dimensions")
        truncate = None if dims is None or dims == encoder.dim else dims
        vectors, report = encoder.encode(texts, truncate_dim=truncate, return_report=True)
        status, payload = 200, _embedding_body(body, vectors, tokens_per_row(report))
    except Exception as exc:  # one bad request must not fail the chunk: it is an error line
        status = 400 if isinstance(exc, ValueError | LookupError | PermissionError) else 500
        log.warning("batch request %s: %s", request["custom_id"], type(exc).__name__)
        payload = {
            "error": {
                "message": f"{type(exc).__name__}: {exc}",
                "type": "invalid_request_error" if status == 400 else "server_error",
                "param": None,
                "code": None,
            }
        }
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": request["custom_id"],
        "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": payload},
        "error": None,
    }


def _embedding_body(body: dict[str, Any], vectors: Any, tokens: list[int]) -> dict[str, Any]:
    import numpy as np

    if body.get("encoding_format") == "base64":
        rows: list[Any] = [
            base64.b64encode(np.ascontiguousarray(r, dtype="<f4").tobytes()).decode("ascii")
            for r in vectors
        ]
    else:
        rows = json_vectors(vectors)
    used = int(sum(tokens))
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)],
        "model": body["model"],
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }


def _write_atomic(path: Path, lines: list[dict[str, Any]]) -> None:
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    os.replace(partial, path)


def finalize(batch_id: str) -> None:
    """Join the chunk files into the output and error files; the first caller wins."""
    with session_scope() as session:
        cancelled = repo.batches.set_batch_status(session, batch_id, "finalizing", ("cancelling",))
        if not cancelled and not repo.batches.set_batch_status(
            session, batch_id, "finalizing", ("in_progress",)
        ):
            return  # finalized already (a redelivered last chunk)
        batch = repo.batches.get_batch(session, batch_id, scope=repo.ALL_PROJECTS)
        chunk_count, project_id = len(batch.chunks), batch.project_id
    folder = batch_dir(batch_id)
    ids = {}
    for kind in ("out", "err"):
        parts = [folder / f"chunk-{i:06d}.{kind}.jsonl" for i in range(chunk_count)]
        ids[kind] = _join(batch_id, kind, [p for p in parts if p.is_file()], project_id)
    with session_scope() as session:
        repo.batches.set_batch_status(
            session,
            batch_id,
            "cancelled" if cancelled else "completed",
            ("finalizing",),
            output_file_id=ids["out"],
            error_file_id=ids["err"],
        )


def _join(batch_id: str, kind: str, parts: list[Path], project_id: str) -> str | None:
    """One file of every part's lines, recorded as a ``batch_output`` file of the batch's
    project; None if empty."""
    rows = 0
    file_id = f"file-{uuid.uuid4().hex}"
    folder = Path(get_settings().artifacts_dir).resolve() / "files"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{file_id}.jsonl"
    with target.open("wb") as out:
        for part in parts:
            data = part.read_bytes()
            rows += data.count(b"\n")
            out.write(data)
    if rows == 0:
        target.unlink()
        return None
    name = f"{batch_id}_{'output' if kind == 'out' else 'error'}.jsonl"
    with session_scope() as session:
        repo.files.add_file(
            session,
            file_id,
            "batch_output",
            name,
            target.stat().st_size,
            rows,
            str(target),
            project_id=project_id,
        )
    return file_id

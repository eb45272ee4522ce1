"""Uploaded files: checked line by line when they arrive, then kept under the artifacts dir.

A ``fine-tune`` file is JSONL training rows (triplets or pairs, the rows of
``embedding.data.examples``); a ``batch`` file is JSONL requests to ``/v1/embeddings`` with a
``custom_id`` each. A file that would fail later fails now, with the line named: the job
or batch that uses it must not be the first to find out.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from api.errors import APIError, not_found
from api.schemas import EmbeddingRequest
from core.config import get_settings
from db import repo
from db.session import session_scope
from embedding.data.examples import (
    DataError,
    check_row,
    jsonl_objects,
    mixed_rows,
    row_from_json,
)

CHUNK = 1 << 20


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def files_dir() -> Path:
    folder = Path(get_settings().artifacts_dir).resolve() / "files"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_upload(stream: BinaryIO, file_id: str) -> tuple[Path, int]:
    """Copy the upload to its final place (written to a temporary name, then renamed)."""
    cap = get_settings().api_max_upload_bytes
    final = files_dir() / f"{file_id}.jsonl"
    partial = final.with_suffix(".partial")
    size = 0
    try:
        with partial.open("wb") as out:
            for block in iter(lambda: stream.read(CHUNK), b""):
                size += len(block)
                if size > cap:
                    raise APIError(
                        413,
                        f"File larger than the cap of {cap} bytes.",
                        param="file",
                        code="file_too_large",
                    )
                out.write(block)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return final, size


def _objects(path: Path) -> Iterator[tuple[str, Any]]:
    """Each line's JSON value, named ``line N`` (the upload's server path stays out of the
    message); a line that is not UTF-8 or not JSON is a 400 naming it."""
    try:
        yield from jsonl_objects(path, line_name=lambda number: f"line {number}")
    except DataError as exc:
        raise _invalid(str(exc)) from None


def _invalid(message: str) -> APIError:
    return APIError(400, message, param="file", code="invalid_file")


def check_training_file(path: Path) -> int:
    """Pairs, triplets or n-tuples, never mixed, each text within the character cap; returns
    the rows."""
    settings = get_settings()
    width, rows = None, 0
    for where, obj in _objects(path):
        try:
            row = check_row(row_from_json(obj, where), where)
        except DataError as exc:
            raise _invalid(str(exc)) from None
        for text in row:
            if len(text) > settings.max_chars_per_text:
                raise _invalid(
                    f"{where}: a text has {len(text)} characters, more than the cap of "
                    f"{settings.max_chars_per_text}",
                )
        if width is not None and len(row) != width:
            raise _invalid(f"{where}: {mixed_rows(len(row), width)} (earlier lines differ)")
        width = len(row)
        rows += 1
        if rows > settings.max_triplets_per_job:
            raise _invalid(f"{where}: more than the cap of {settings.max_triplets_per_job} rows")
    if rows == 0:
        raise _invalid("The file has no rows.")
    return rows


def fine_tune_file_path(file_id: str, param: str, *, scope: repo.Scope) -> str:
    """Where a ``fine-tune`` file's bytes are: 404 for an id unknown in ``scope`` (the
    caller's project), 400 for a file of another purpose (``param`` names the request field
    that gave the id)."""
    with session_scope() as session:
        row = repo.files.get_file(session, file_id, scope=scope)
    if row is None:
        raise not_found("file", file_id, param=param)
    if row.purpose != "fine-tune":
        raise APIError(
            400, f"File {file_id!r} has purpose {row.purpose!r}, not 'fine-tune'.", param=param
        )
    return row.path


def training_row_width(path: Path) -> int:
    """2 for a file of pairs, 3 for triplets (uploads are checked: every row has the first
    row's width)."""
    for where, obj in _objects(path):
        try:
            return len(row_from_json(obj, where))
        except DataError as exc:
            raise _invalid(str(exc)) from None
    raise _invalid("The file has no rows.")


def batch_requests(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each request of a batch file, checked: ``custom_id`` (unique), ``method`` POST,
    ``url`` /v1/embeddings, and a ``body`` that ``POST /v1/embeddings`` would accept; each
    with its line's name (``line 3``)."""
    seen: set[str] = set()
    for where, obj in _objects(path):
        if not isinstance(obj, dict):
            raise _invalid(f"{where}: expected a JSON object, got {type(obj).__name__}")
        unknown = set(obj) - {"custom_id", "method", "url", "body"}
        if unknown:
            raise _invalid(f"{where}: unknown field(s) {sorted(unknown)}")
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
            raise _invalid(
                f"{where}: custom_id must be a non-empty string (at most 512 characters)"
            )
        if custom_id in seen:
            raise _invalid(f"{where}: custom_id {custom_id!r} is used twice")
        seen.add(custom_id)
        if obj.get("method") != "POST":
            raise _invalid(f"{where}: method must be 'POST'")
        if obj.get("url") != "/v1/embeddings":
            raise _invalid(f"{where}: url must be '/v1/embeddings' (the only batch endpoint here)")
        try:
            EmbeddingRequest.model_validate(obj.get("body"))
        except ValidationError as exc:
            problems = "; ".join(
                f"body.{'.'.join(str(p) for p in e['loc']) or ''}: {e['msg']}" for e in exc.errors()
            )
            raise _invalid(f"{where}: {problems}") from None
        yield where, obj


def check_batch_file(path: Path) -> int:
    rows = sum(1 for _ in batch_requests(path))
    if rows == 0:
        raise _invalid("The file has no requests.")
    return rows

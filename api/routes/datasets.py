"""``/v1/datasets``: a fine-tuning dataset built from a codebase (an extension of OpenAI's API).

``POST /v1/datasets`` (multipart form) with a ``folder`` under the model roots, or an
``archive`` (a zip or tar of a repository, at most ``api_max_upload_bytes``), and an optional
``eval_share``. The API stores the archive and sends ``embedding.build_dataset`` to a worker
(it never parses code itself), waits for it, and answers with the two registered files:
``training_file`` and ``validation_file`` are ``/v1/files`` objects whose ids
``fine_tuning.jobs.create`` takes, and ``report`` says what the pairs are (per language and
source) and what was skipped or dropped. Bad input is a 4xx in OpenAI's error shape, and
leaves no file behind; the stored archive is removed once the build is done.

The project's storage quota is checked before the build (what it stores plus the archive)
and after it (plus the two files): over it, 429 ``insufficient_quota``, the files deleted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from pydantic import BaseModel

from api import files_store, storage_quota
from api.auth import CallerDep, audit, authenticate
from api.errors import APIError
from api.schemas import FileObject
from db import repo
from db.session import session_scope

router = APIRouter(dependencies=[Depends(authenticate)], tags=["datasets"])

BUILD_TASK = "embedding.build_dataset"
BUILD_TIMEOUT_S = 900.0


class Dataset(BaseModel):
    object: str = "dataset"
    training_file: FileObject
    validation_file: FileObject | None
    report: dict[str, Any]


@router.post("/v1/datasets", response_model=Dataset)
def create_dataset(
    caller: CallerDep,
    folder: Annotated[str | None, Form(max_length=4096)] = None,
    archive: Annotated[UploadFile | None, File()] = None,
    eval_share: Annotated[float, Form(ge=0.0, lt=1.0)] = 0.1,
) -> Dataset:
    if (folder is None) == (archive is None):
        raise APIError(
            400, "Give a folder or an archive, not both or neither.", code="invalid_value"
        )
    payload: dict[str, Any] = {"eval_share": eval_share, "project": caller.write_project}
    stored = None
    if archive is not None:
        stored, size = files_store.save_upload(archive.file, f"archive-{files_store.new_file_id()}")
        payload["archive"] = str(stored)
    else:
        size = 1  # a folder's pairs are not known yet: a project at its quota is refused
        payload["folder"] = folder
    try:
        with session_scope() as session:
            storage_quota.check(session, caller.write_project, size)
        reply = _run(payload)
    finally:
        if stored is not None:
            stored.unlink(missing_ok=True)
    error = reply.get("error")
    if error:
        raise APIError(
            int(error["status"]), error["message"], param=error.get("param"), code=error["code"]
        )
    _within_quota(caller.write_project, reply)
    audit(caller, "dataset.create", reply["training_file"]["id"], caller.write_project)
    return Dataset(
        training_file=_file(reply["training_file"]),
        validation_file=_file(reply["validation_file"]) if reply["validation_file"] else None,
        report=reply["report"],
    )


def _within_quota(project_id: str, reply: dict[str, Any]) -> None:
    """The files the build registered may not take the project over its storage quota: if
    they do, they are deleted (rows and bytes) and the answer is the quota's 429."""
    made = [f for f in (reply["training_file"], reply["validation_file"]) if f]
    adding = sum(int(f["bytes"]) for f in made)
    scope = repo.scope.project(project_id)
    with session_scope() as session:
        project = repo.projects.find_project(session, project_id)
        quota = project.max_storage_bytes if project is not None else None
        if quota is None:
            return
        stored = repo.storage.stored_bytes(session, project_id, lock=True)
        if stored <= quota:
            return
        paths = []
        for f in made:
            row = repo.files.get_file(session, f["id"], scope=scope)
            if row is not None:
                paths.append(Path(row.path))
                repo.files.delete_file(session, f["id"], scope=scope)
    for path in paths:
        path.unlink(missing_ok=True)
    raise storage_quota.refusal(project_id, stored - adding, adding, quota)


def _file(row: dict[str, Any]) -> FileObject:
    return FileObject(
        id=row["id"],
        bytes=row["bytes"],
        created_at=int(row["created_at"] or 0),
        filename=row["filename"],
        purpose=row["purpose"],
        rows=row["rows"],
    )


def _run(payload: dict[str, Any]) -> dict[str, Any]:
    from celery.exceptions import TimeoutError as CeleryTimeout

    from workers.app import CPU_QUEUE, app

    try:
        result = app.send_task(BUILD_TASK, kwargs=payload, queue=CPU_QUEUE)
    except Exception:
        raise APIError(503, "The task broker is unavailable.", code="broker_unavailable") from None
    try:
        return result.get(timeout=BUILD_TIMEOUT_S, interval=0.05, disable_sync_subtasks=False)
    except CeleryTimeout:
        raise APIError(
            504, f"No worker built the dataset within {BUILD_TIMEOUT_S:g} s.", code="worker_timeout"
        ) from None
    except Exception:
        raise APIError(
            502, "The dataset build failed in the worker.", code="worker_error"
        ) from None

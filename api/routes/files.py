"""``/v1/files``: upload (validated), list, retrieve, content, delete; each file is its
project's (another project's id is a 404). An upload that would take the project over its
storage quota is 429 ``insufficient_quota`` and leaves no file behind."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import FileResponse

from api import files_store, storage_quota
from api.auth import Caller, CallerDep, audit, authenticate
from api.errors import APIError, not_found
from api.schemas import Deleted, FileList, FileObject, unix
from db import repo
from db.session import session_scope

router = APIRouter(dependencies=[Depends(authenticate)], tags=["files"])


def file_object(row: object) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=unix(row.created_at) or 0,
        filename=row.filename,
        purpose=row.purpose,
        rows=row.rows,
    )


@router.post("/v1/files", response_model=FileObject)
def upload_file(
    caller: CallerDep,
    file: Annotated[UploadFile, File()],
    purpose: Annotated[Literal["fine-tune", "batch"], Form()],
) -> FileObject:
    file_id = files_store.new_file_id()
    path, size = files_store.save_upload(file.file, file_id)
    try:
        with session_scope() as session:  # refused before reading it line by line
            storage_quota.check(session, caller.write_project, size)
        check = (
            files_store.check_training_file
            if purpose == "fine-tune"
            else files_store.check_batch_file
        )
        rows = check(path)
        name = (file.filename or "upload.jsonl")[-500:]
        with session_scope() as session:
            # The quota's check and the new row in one transaction (the project locked).
            storage_quota.check(session, caller.write_project, size)
            row = repo.files.add_file(
                session,
                file_id,
                purpose,
                name,
                size,
                rows,
                str(path),
                project_id=caller.write_project,
            )
            answer = file_object(row)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    audit(caller, "file.create", file_id, caller.write_project, purpose=purpose, bytes=size)
    return answer


@router.get("/v1/files", response_model=FileList)
def list_files(
    caller: CallerDep,
    purpose: Annotated[str | None, Query(max_length=16)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> FileList:
    with session_scope() as session:
        if after is not None and repo.files.get_file(session, after, scope=caller.scope) is None:
            raise not_found("file", after, param="after")
        rows = repo.files.list_files(
            session, purpose=purpose, after=after, limit=limit + 1, scope=caller.scope
        )
        data = [file_object(r) for r in rows[:limit]]
    return FileList(
        data=data,
        has_more=len(rows) > limit,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


def _get(caller: Caller, file_id: str) -> object:
    with session_scope() as session:
        row = repo.files.get_file(session, file_id, scope=caller.scope)
    if row is None:
        raise not_found("file", file_id, param="file_id")
    return row


@router.get("/v1/files/{file_id}", response_model=FileObject)
def retrieve_file(caller: CallerDep, file_id: str) -> FileObject:
    return file_object(_get(caller, file_id))


@router.get(
    "/v1/files/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/jsonl": {}}, "description": "the file's bytes"}},
)
def file_content(caller: CallerDep, file_id: str) -> FileResponse:
    row = _get(caller, file_id)
    return FileResponse(row.path, media_type="application/jsonl", filename=row.filename)


@router.delete("/v1/files/{file_id}", response_model=Deleted)
def delete_file(caller: CallerDep, file_id: str) -> Deleted:
    from pathlib import Path

    with session_scope() as session:
        row = repo.files.get_file(session, file_id, scope=caller.scope)
        if row is None:
            raise not_found("file", file_id, param="file_id")
        # A file is used only by jobs of its own project (a job takes its project's files).
        owner = repo.scope.project(row.project_id)
        if row.purpose == "fine-tune" and _used_by_active_job(session, file_id, owner):
            raise APIError(
                409, "The file is used by a job that has not finished.", code="file_in_use"
            )
        path, project_id = row.path, row.project_id
        repo.files.delete_file(session, file_id, scope=caller.scope)
    Path(path).unlink(missing_ok=True)
    audit(caller, "file.delete", file_id, project_id)
    return Deleted(id=file_id, object="file", deleted=True)


def _used_by_active_job(session: object, file_id: str, scope: repo.Scope) -> bool:
    active = repo.jobs.list_jobs(session, status="queued", limit=10_000, scope=scope)
    active += repo.jobs.list_jobs(session, status="running", limit=10_000, scope=scope)
    for job in active:
        request = repo.jobs.get_job_request(session, job.id, scope=scope)
        if request is not None and file_id in (request.training_file, request.validation_file):
            return True
    return False

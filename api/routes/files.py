"""``/v1/files``: upload (validated), list, retrieve, content, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import FileResponse

from api import files_store
from api.errors import APIError, not_found
from api.schemas import Deleted, FileList, FileObject, unix
from api.security import require_api_key
from db import repo
from db.session import session_scope

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["files"])


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
    file: Annotated[UploadFile, File()],
    purpose: Annotated[Literal["fine-tune", "batch"], Form()],
) -> FileObject:
    file_id = files_store.new_file_id()
    path, size = files_store.save_upload(file.file, file_id)
    try:
        check = (
            files_store.check_training_file
            if purpose == "fine-tune"
            else files_store.check_batch_file
        )
        rows = check(path)
        name = (file.filename or "upload.jsonl")[-500:]
        with session_scope() as session:
            row = repo.files.add_file(session, file_id, purpose, name, size, rows, str(path))
            return file_object(row)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@router.get("/v1/files", response_model=FileList)
def list_files(
    purpose: Annotated[str | None, Query(max_length=16)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> FileList:
    with session_scope() as session:
        if after is not None and repo.files.get_file(session, after) is None:
            raise not_found("file", after, param="after")
        rows = repo.files.list_files(session, purpose=purpose, after=after, limit=limit + 1)
        data = [file_object(r) for r in rows[:limit]]
    return FileList(
        data=data,
        has_more=len(rows) > limit,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


def _get(file_id: str) -> object:
    with session_scope() as session:
        row = repo.files.get_file(session, file_id)
    if row is None:
        raise not_found("file", file_id, param="file_id")
    return row


@router.get("/v1/files/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str) -> FileObject:
    return file_object(_get(file_id))


@router.get(
    "/v1/files/{file_id}/content",
    response_class=FileResponse,
    responses={200: {"content": {"application/jsonl": {}}, "description": "the file's bytes"}},
)
def file_content(file_id: str) -> FileResponse:
    row = _get(file_id)
    return FileResponse(row.path, media_type="application/jsonl", filename=row.filename)


@router.delete("/v1/files/{file_id}", response_model=Deleted)
def delete_file(file_id: str) -> Deleted:
    from pathlib import Path

    with session_scope() as session:
        row = repo.files.get_file(session, file_id)
        if row is None:
            raise not_found("file", file_id, param="file_id")
        if row.purpose == "fine-tune" and _used_by_active_job(session, file_id):
            raise APIError(
                409, "The file is used by a job that has not finished.", code="file_in_use"
            )
        path = row.path
        repo.files.delete_file(session, file_id)
    Path(path).unlink(missing_ok=True)
    return Deleted(id=file_id, object="file", deleted=True)


def _used_by_active_job(session: object, file_id: str) -> bool:
    for job in repo.jobs.list_jobs(session, status="queued", limit=10_000) + repo.jobs.list_jobs(
        session, status="running", limit=10_000
    ):
        request = repo.jobs.get_job_request(session, job.id)
        if request is not None and file_id in (request.training_file, request.validation_file):
            return True
    return False

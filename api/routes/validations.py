"""``/v1/validations`` (our extension, for CI): start the validation chord, read its verdict.

``POST`` starts the chord through ``workers.client.start_validation`` and answers at once
with the run (``running``); ``GET`` reads the run and every criterion from the database;
``?format=junit`` gives the same JUnit XML as ``embedctl validate --junit``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api.auth import Caller, CallerDep, audit, authenticate
from api.errors import APIError, not_found
from api.schemas import ValidationRequest, ValidationRun
from core.config import get_settings

router = APIRouter(dependencies=[Depends(authenticate)], tags=["validations"])


def _unix(text: str | None) -> int | None:
    return None if text is None else int(datetime.fromisoformat(text).timestamp())


def run_object(summary: dict[str, Any]) -> ValidationRun:
    return ValidationRun(
        id=summary["run_id"],
        status=summary["status"],
        verdict=summary["verdict"],
        trigger=summary["trigger"],
        models=summary["models"],
        created_at=_unix(summary["started_at"]) or 0,
        finished_at=_unix(summary["finished_at"]),
        checks=summary["checks"],
    )


def _summary(caller: Caller, run_id: str) -> dict[str, Any]:
    from workers.jobs.validation_run import read_run

    try:
        uuid.UUID(run_id)
        return read_run(run_id, scope=caller.scope)
    except (ValueError, LookupError):
        raise not_found("validation run", run_id, param="validation_id") from None


@router.post("/v1/validations", response_model=ValidationRun)
def create_validation(caller: CallerDep, body: ValidationRequest) -> ValidationRun:
    """The checks run on what each name resolves to in the caller's project (a version name
    becomes its folder), so a run never reads another project's model."""
    from api.model_ids import resolve
    from workers.client import start_validation

    names = body.models or [get_settings().default_model]
    models = []
    for name in names:
        found = resolve(name, param="models", scope=caller.scope)
        if found.name.startswith("ft:"):
            raise APIError(400, "Validate a fine-tuned model by its folder.", param="models")
        models.append(found.load)
    try:
        run_id, _ = start_validation(
            models, trigger="api", checks=body.checks, project_id=caller.write_project
        )
    except ValueError as exc:
        raise APIError(400, str(exc), param="checks", code="invalid_value") from None
    audit(caller, "validation.create", run_id, caller.write_project)
    return run_object(_summary(caller, run_id))


@router.get(
    "/v1/validations/{validation_id}",
    response_model=ValidationRun,
    responses={200: {"content": {"application/xml": {}}}},
)
def retrieve_validation(
    caller: CallerDep,
    validation_id: str,
    format: Annotated[Literal["json", "junit"], Query()] = "json",
) -> Any:
    summary = _summary(caller, validation_id)
    if format == "junit":
        from workers.reports.render import render_junit

        return Response(render_junit(summary), media_type="application/xml")
    return run_object(summary)

"""``/v1/evaluations`` (ours): A/B comparisons of two models on (query, document) pairs.

``POST`` checks both model names and the data file (an upload of purpose ``fine-tune``
holding pairs), then ``workers.client.start_evaluation`` records the evaluation (``queued``)
and sends ``embedding.compare`` to the gpu queue; the answer is the evaluation as recorded.
The worker resolves the names, reads the file, compares and records the outcome: poll
``GET /v1/evaluations/{id}``. This process never loads a model.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api import files_store, model_ids
from api.auth import Caller, CallerDep, audit, authenticate
from api.errors import APIError, not_found
from api.schemas import (
    EvaluatedModel,
    Evaluation,
    EvaluationData,
    EvaluationList,
    EvaluationRequest,
)
from db import repo
from db.session import session_scope
from workers.jobs.evaluation_run import read, to_dict

router = APIRouter(dependencies=[Depends(authenticate)], tags=["evaluations"])


def _unix(text: str | None) -> int | None:
    return None if text is None else int(datetime.fromisoformat(text).timestamp())


def evaluation_object(evaluation: dict[str, Any]) -> Evaluation:
    """An evaluation (``workers.jobs.evaluation_run.to_dict``) in the API's shape."""
    data = evaluation["data"]
    return Evaluation(
        id=evaluation["id"],
        status=evaluation["status"],
        created_at=_unix(evaluation["created_at"]) or 0,
        started_at=_unix(evaluation["started_at"]),
        finished_at=_unix(evaluation["finished_at"]),
        model_a=EvaluatedModel(**evaluation["model_a"]),
        model_b=EvaluatedModel(**evaluation["model_b"]),
        data=EvaluationData(file=data["name"], sha256=data["sha256"], rows=data["rows"]),
        primary_metric=evaluation["primary_metric"],
        metrics_a=evaluation["metrics_a"],
        metrics_b=evaluation["metrics_b"],
        differences=evaluation["differences"],
        verdict=evaluation["verdict"],
        n_resamples=evaluation["n_resamples"],
        seed=evaluation["seed"],
        trigger=evaluation["trigger"],
        error=evaluation["error"],
        attempts=evaluation["attempts"],
        rescues=evaluation["rescues"],
    )


def _read(caller: Caller, evaluation_id: str, param: str = "evaluation_id") -> dict[str, Any]:
    try:
        uuid.UUID(evaluation_id)
        return read(evaluation_id, scope=caller.scope)
    except (ValueError, LookupError):
        raise not_found("evaluation", evaluation_id, param=param) from None


@router.post("/v1/evaluations", response_model=Evaluation)
def create_evaluation(caller: CallerDep, body: EvaluationRequest) -> Evaluation:
    from embedding.models.hub import PathNotAllowed
    from embedding.models.specs import UnknownModel
    from workers.client import NotSent, start_evaluation
    from workers.jobs.submit_checks import DatasetNotFound
    from workers.schemas import PayloadError

    model_ids.resolve(body.model_a, param="model_a", scope=caller.scope)
    model_ids.resolve(body.model_b, param="model_b", scope=caller.scope)
    path = files_store.fine_tune_file_path(body.data_file, "data_file", scope=caller.scope)
    if files_store.training_row_width(Path(path)) != 2:
        raise APIError(
            400,
            f"File {body.data_file!r} holds triplets; an evaluation needs (query, document) "
            'pairs: {"anchor", "positive"} rows.',
            param="data_file",
            code="invalid_value",
        )
    try:
        evaluation_id = start_evaluation(
            body.model_a,
            body.model_b,
            dataset=path,
            data_name=body.data_file,
            n_resamples=body.n_resamples,
            seed=body.seed,
            trigger="api",
            project=caller.write_project,
        )
    except PayloadError as exc:
        raise APIError(
            400, str(exc).removeprefix("CompareRequest: "), code="invalid_value"
        ) from None
    except UnknownModel as exc:  # unregistered between the check above and the record
        raise APIError(404, str(exc), code="model_not_found") from None
    except (PathNotAllowed, DatasetNotFound) as exc:  # uploads live outside the model roots
        raise APIError(
            500, f"Server misconfigured: {exc}", code="artifacts_outside_model_roots"
        ) from None
    except NotSent:
        raise APIError(503, "The task broker is unavailable.", code="broker_unavailable") from None
    audit(caller, "evaluation.create", evaluation_id, caller.write_project)
    return evaluation_object(_read(caller, evaluation_id))


@router.get("/v1/evaluations", response_model=EvaluationList)
def list_evaluations(
    caller: CallerDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> EvaluationList:
    """Newest first; ``after`` an evaluation id (cursor paging)."""
    if after is not None:
        _read(caller, after, param="after")  # 404 for an unknown cursor
    with session_scope() as session:
        rows = [
            to_dict(r)
            for r in repo.evaluations.list_evaluations(
                session, after=after, limit=limit + 1, scope=caller.scope
            )
        ]
    data = [evaluation_object(e) for e in rows[:limit]]
    return EvaluationList(
        data=data,
        has_more=len(rows) > limit,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/v1/evaluations/{evaluation_id}", response_model=Evaluation)
def retrieve_evaluation(caller: CallerDep, evaluation_id: str) -> Evaluation:
    return evaluation_object(_read(caller, evaluation_id))

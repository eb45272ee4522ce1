"""``/v1/models``: every spec (shared by all projects), and the caller's project's fine-tuned
versions under their ``ft:`` ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends

from api import model_ids
from api.auth import Caller, CallerDep, audit, authenticate
from api.errors import APIError
from api.schemas import Deleted, Model, ModelList, unix
from db import repo
from db.session import session_scope
from embedding.models.specs import all_specs, spec_from_folder
from workers.serving.model_names import FT_PREFIX, job_fine_tuned_id

router = APIRouter(dependencies=[Depends(authenticate)], tags=["models"])
OWNER = "embedding-infra"


def _spec_models() -> list[Model]:
    return [
        Model(
            id=spec.name,
            created=0,
            owned_by=OWNER,
            dimensions=spec.dim or None,
            matryoshka_dimensions=list(spec.matryoshka_dims),
        )
        for spec in all_specs()
    ]


def _fine_tuned_models(caller: Caller) -> list[Model]:
    """One model per succeeded job of the caller's scope whose version is still registered."""
    out = []
    with session_scope() as session:
        for job in repo.jobs.list_jobs(session, status="succeeded", limit=1000, scope=caller.scope):
            version = job.model_version
            if version is None:
                continue
            out.append(_fine_tuned(job, version))
    return out


def _fine_tuned(job: Any, version: Any) -> Model:
    """A fine-tune's widths come from its exported folder (the base's Matryoshka dims are
    kept there), so a client sees the ``dimensions`` it may ask for, as for its base."""
    dim, dims = _widths(version.path)
    return Model(
        id=job_fine_tuned_id(job),
        created=unix(version.created_at) or 0,
        owned_by="user",
        dimensions=dim,
        matryoshka_dimensions=dims,
        base_model=job.model,
        fine_tuning_job=str(job.id),
    )


def _widths(path: str) -> tuple[int | None, list[int]]:
    """The width and Matryoshka dims of a model folder; none known when it cannot be read
    (files removed by hand): the listing still names the model."""
    try:
        spec = spec_from_folder(Path(path))
    except (OSError, ValueError):
        return None, []
    return spec.dim or None, list(spec.matryoshka_dims)


@router.get("/v1/models", response_model=ModelList)
def list_models(caller: CallerDep) -> ModelList:
    return ModelList(data=_spec_models() + _fine_tuned_models(caller))


@router.get("/v1/models/{model_id:path}", response_model=Model)
def retrieve_model(caller: CallerDep, model_id: str) -> Model:
    for model in _spec_models():
        if model.id == model_id:
            return model
    if model_id.startswith(FT_PREFIX):
        model_ids.resolve(model_id, scope=caller.scope)  # 404 unless a live fine-tune of ours
        for model in _fine_tuned_models(caller):
            if model.id == model_id:
                return model
    raise APIError(
        404, f"The model {model_id!r} does not exist.", param="model", code="model_not_found"
    )


@router.delete("/v1/models/{model_id:path}", response_model=Deleted)
def delete_model(caller: CallerDep, model_id: str) -> Deleted:
    """Fine-tuned models only: the version is unregistered (its files stay on disk, so a
    job's history keeps pointing at something real)."""
    if not model_id.startswith(FT_PREFIX):
        raise APIError(
            403 if any(m.id == model_id for m in _spec_models()) else 404,
            f"Only fine-tuned models can be deleted, not {model_id!r}.",
            param="model",
            code="model_not_deletable",
        )
    model_ids.resolve(model_id, scope=caller.scope)
    job_id = model_id.rsplit(":", 1)[-1]
    with session_scope() as session:
        job = repo.jobs.get_job(session, job_id, scope=caller.scope)
        deleted = job is not None and repo.versions.delete_model_version(
            session, job.model_version_id, scope=caller.scope
        )
        project_id = job.project_id if job is not None else None
    if deleted:
        audit(caller, "model.delete", model_id, project_id)
    return Deleted(id=model_id, object="model", deleted=bool(deleted))

"""Model names the API accepts, and what the worker is told to load for each.

* a spec name (``minilm``): passed as is;
* a model folder under ``EMBEDDING_MODEL_ROOTS``: passed as is (the worker checks the roots);
* a fine-tuned model id ``ft:<base>:<suffix>:<job id>``: looked up here, in the database
  (the job must have succeeded and registered a version), and replaced by the version's
  folder, which lies under the artifacts directory.

The id names the job, so it is stable and needs no table of its own; the base model and
suffix in it are checked against the job, so a mistyped id is a 404, not another model.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from api.errors import APIError
from db import repo
from db.session import session_scope
from embedding.specs import UnknownModel, get_spec

FT_PREFIX = "ft:"
SUFFIX_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")


def fine_tuned_id(base: str, suffix: str | None, job_id: str) -> str:
    return f"{FT_PREFIX}{base}:{suffix or ''}:{job_id}"


@dataclass(frozen=True)
class Resolved:
    """``load``: what the worker loads; ``dims``: allowed Matryoshka dimensions (empty: only
    the model's own width); ``dim``: that width, when known here without loading anything."""

    name: str
    load: str
    dim: int | None
    dims: tuple[int, ...]


def resolve(name: str, param: str = "model") -> Resolved:
    if name.startswith(FT_PREFIX):
        return _fine_tuned(name, param)
    if "/" in name or name.startswith((".", "~")):
        _check_roots(name, param)
    try:
        spec = get_spec(name)
    except UnknownModel:
        raise APIError(
            404, f"The model {name!r} does not exist.", param=param, code="model_not_found"
        ) from None
    except OSError as exc:
        raise APIError(400, f"Model {name!r}: {exc}", param=param, code="invalid_model") from None
    return Resolved(name, name, spec.dim or None, tuple(spec.matryoshka_dims))


def _check_roots(name: str, param: str) -> None:
    """A folder must lie under the model roots; asked before the folder is even looked at,
    so the API tells nothing about what exists elsewhere on the server."""
    from pathlib import Path

    from embedding.config import get_settings
    from embedding.hub import PathNotAllowed, ensure_under_roots

    if name.startswith((".", "/", "~")) or Path(name).exists():
        try:
            ensure_under_roots(name, get_settings().model_roots)
        except PathNotAllowed:
            raise APIError(
                400,
                f"Model {name!r} is not under the allowed model roots.",
                param=param,
                code="model_not_allowed",
            ) from None


def _fine_tuned(name: str, param: str) -> Resolved:
    missing = APIError(
        404, f"The model {name!r} does not exist.", param=param, code="model_not_found"
    )
    parts = name[len(FT_PREFIX) :].rsplit(":", 2)
    if len(parts) != 3:
        raise missing
    base, suffix, job_text = parts
    try:
        job_id = uuid.UUID(job_text)
    except ValueError:
        raise missing from None
    with session_scope() as session:
        job = repo.get_job(session, job_id)
        if job is None or job.status != "succeeded" or job.model_version_id is None:
            raise missing
        request = repo.get_job_request(session, job_id)
        version = repo.get_model_version(session, job.model_version_id)
        if version is None or job.model != base or ((request and request.suffix) or "") != suffix:
            raise missing
        path = version.path
    try:
        spec = get_spec(path)
    except (UnknownModel, OSError):
        raise missing from None
    return Resolved(name, path, spec.dim or None, ())


def check_dimensions(model: Resolved, dimensions: int | None) -> int | None:
    """The ``truncate_dim`` for the worker: Matryoshka dims where the spec has them; the
    model's own width is always allowed (a no-op); anything else is a clear 400."""
    if dimensions is None or (model.dim is not None and dimensions == model.dim):
        return None
    if dimensions in model.dims:
        return dimensions
    allowed = (
        f"one of {list(model.dims)}"
        if model.dims
        else f"only its own width ({model.dim})"
        if model.dim
        else "no Matryoshka truncation"
    )
    raise APIError(
        400,
        f"dimensions={dimensions} is not supported by {model.name!r}: it allows {allowed}.",
        param="dimensions",
        code="invalid_value",
    )

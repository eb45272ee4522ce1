"""Model names the API accepts, and what the worker is told to load for each.

Every name ``workers.serving.model_names`` knows: a spec, a registered version (its name,
``name:version``, its ``ft:<base>:<suffix>:<job id>`` id or its job id; looked up in the
database and replaced by the version's folder, under the artifacts directory), or a folder
under ``EMBEDDING_MODEL_ROOTS``. An ``ft:`` id whose base or suffix does not match its job
is a 404, not another model.

Fine-tuned models are their project's: names and ids are looked up in the caller's scope,
and a folder under the artifacts directory's ``jobs/`` (where jobs write their models) is accepted
only when it is (inside) a registered version of the caller's scope. Another project's model
is a 404 by every name, exactly as one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from api.errors import APIError
from core.config import get_settings
from db import repo
from db.session import session_scope
from embedding.models.hub import PathNotAllowed
from embedding.models.specs import UnknownModel, get_spec
from workers.serving.model_names import checked_model_name


@dataclass(frozen=True)
class Resolved:
    """``load``: what the worker loads; ``dims``: allowed Matryoshka dimensions (empty: only
    the model's own width); ``dim``: that width, when known here without loading anything."""

    name: str
    load: str
    dim: int | None
    dims: tuple[int, ...]


def resolve(name: str, param: str = "model", *, scope: repo.Scope) -> Resolved:
    missing = APIError(
        404, f"The model {name!r} does not exist.", param=param, code="model_not_found"
    )
    try:
        load = checked_model_name(name, scope=scope)
        if not _folder_in_scope(load, scope):
            raise UnknownModel(name)
    except UnknownModel:
        raise missing from None
    except PathNotAllowed:
        raise APIError(
            400,
            f"Model {name!r} is not under the allowed model roots.",
            param=param,
            code="model_not_allowed",
        ) from None
    try:
        spec = get_spec(load)
    except UnknownModel:
        raise missing from None
    except OSError as exc:
        raise APIError(400, f"Model {name!r}: {exc}", param=param, code="invalid_model") from None
    return Resolved(name, load, spec.dim or None, tuple(spec.matryoshka_dims))


def _folder_in_scope(load: str, scope: repo.Scope) -> bool:
    """A folder under ``<artifacts>/jobs`` is a job's output (``finetune_job.job_dir``): it
    may be named only by a caller that sees a version registered at (or above) it. Specs and
    folders elsewhere under the roots (models an operator placed there) are everyone's."""
    jobs = Path(get_settings().artifacts_dir).resolve() / "jobs"
    path = Path(load)
    if not path.is_absolute() or not path.resolve().is_relative_to(jobs):
        return True
    target = path.resolve()
    with session_scope() as session:
        paths = repo.versions.list_version_paths(session, scope=scope)
    return any(target.is_relative_to(Path(found).resolve()) for found in paths)


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

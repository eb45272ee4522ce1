"""Which model a name means: a spec, a registered fine-tuned version, or a folder.

Every way in (``embedctl --model``, task payloads, the Python client, the HTTP API) names a
model the same ways:

* a spec name (``minilm``);
* a registered version: its name (``minilm-ft``, the highest version), ``name:version``
  (``minilm-ft:3``), its fine-tuned id ``ft:<base>:<suffix>:<job id>``, or its job's id;
* a model folder (a ``embedctl finetune --out`` folder works too: its model is in ``model/``);
* an ``org/name`` hub id, from a payload only where a spec names that repository.

A job registers its model as version N of ``<base>-<suffix>`` (``<base>-ft`` without a
suffix) and is known by the id ``ft:<base>:<suffix>:<job id>`` (empty suffix: ``ft:minilm::…``),
which :func:`fine_tuned_id` builds for every caller. The registry is read through ``db/``
here, so ``embedding/`` stays free of SQLAlchemy.

A payload comes from the queue, so a folder in it must resolve (symlinks followed) under
``EMBEDDING_MODEL_ROOTS`` (:func:`checked_model_name`); the CLI on a user's machine may load
any folder (:func:`local_model_name`).

Version names are a project's own (two teams may each have a ``minilm-ft``), so every lookup
of one takes the :class:`~db.repo.scope.Scope` it is read in: a project's, or every
project's (the operator's CLI).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import get_settings
from db import repo
from db.repo.scope import ALL_PROJECTS, Scope
from db.session import database_exists, session_scope
from embedding.models.hub import ensure_under_roots
from embedding.models.specs import UnknownModel, all_specs

FT_PREFIX = "ft:"
SUFFIX_PATTERN = r"[A-Za-z0-9_-]{1,40}"
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def fine_tuned_id(base: str, suffix: str | None, job_id: str) -> str:
    """The id of a job's model, as OpenAI shapes it: ``ft:<base>:<suffix>:<job id>``."""
    return f"{FT_PREFIX}{base}:{suffix or ''}:{job_id}"


def job_fine_tuned_id(job: Any) -> str:
    """The ``ft:`` id of a job row (its suffix is in its params)."""
    return fine_tuned_id(job.model, (job.params or {}).get("suffix"), str(job.id))


def version_name(base: str, suffix: str | None) -> str:
    """The name a job registers its model under: ``<base>-<suffix>``, ``<base>-ft`` by default.

    A base given as a folder contributes its last part; characters that would read as a
    path or a ``:version`` are replaced.
    """
    label = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(base).name or base)
    return f"{label}-{suffix or 'ft'}"


@dataclass(frozen=True)
class Version:
    """A registered version found by one of its names; ``path`` is what a worker loads."""

    name: str
    version: int
    path: str
    job_id: str | None
    fine_tuned_id: str | None


def checked_model_name(name: str, *, scope: Scope) -> str:
    """What a worker loads for a payload's ``name``: a spec name or a folder under the roots;
    a version name is looked up in ``scope``.

    Raises ``PathNotAllowed`` for a folder outside the roots and ``UnknownModel`` (naming
    the ways a model may be named) for anything else.
    """
    return _resolve(name, trusted=False, scope=scope)


def local_model_name(name: str) -> str:
    """What the CLI loads for ``--model``: as :func:`checked_model_name`, but any folder, any
    hub id and any project's versions (the operator's own machine)."""
    return _resolve(name, trusted=True, scope=ALL_PROJECTS)


def _resolve(name: str, trusted: bool, scope: Scope) -> str:
    if any(spec.name == name for spec in all_specs()):
        return name
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or ("/" in name and path.exists())
    if looks_like_path:
        if not trusted:
            path = ensure_under_roots(path, get_settings().model_roots)
        return str(_model_folder(path))
    if _HUB_ID.fullmatch(name):
        return name if trusted else _hub_spec(name)
    found = find_version(name, scope=scope)
    if found is not None:
        return found.path
    raise UnknownModel(
        f"unknown model {name!r}: not a spec ({', '.join(sorted(s.name for s in all_specs()))}), "
        "not a registered version (name, name:version, ft: id or job id), not a model folder"
    )


def _model_folder(path: Path) -> Path:
    """``path``, or its ``model/`` subfolder for an ``embedctl finetune --out`` folder."""
    if not (path / "config.json").exists() and (path / "model" / "config.json").exists():
        return path / "model"
    return path


def _hub_spec(repo_id: str) -> str:
    """A payload may download only what a spec pins: the spec named by that repository."""
    for spec in all_specs():
        if spec.repo_id == repo_id:
            return spec.name
    raise UnknownModel(
        f"hub id {repo_id!r} is named by no spec; a task may download only the specs' "
        f"repositories ({', '.join(sorted(s.repo_id for s in all_specs() if s.repo_id))})"
    )


def find_version(name: str, *, scope: Scope) -> Version | None:
    """The registered version ``name`` means (ft: id, job id, ``name:version``, or name) in
    ``scope``, or None. A job that has not succeeded, or whose version was deleted, has none."""
    if not _askable(name) or not database_exists():
        return None
    job_id = _job_id_of(name)
    with session_scope() as session:
        if job_id is not None:
            job = repo.jobs.get_job(session, job_id, scope=scope)
            if job is None or job.status != "succeeded" or job.model_version_id is None:
                return None
            if name.startswith(FT_PREFIX):
                base, suffix, _ = name[len(FT_PREFIX) :].rsplit(":", 2)
                if (base, suffix) != (job.model, (job.params or {}).get("suffix") or ""):
                    return None
            row = repo.versions.get_model_version(session, job.model_version_id, scope=scope)
        else:
            label, _, number = name.rpartition(":")
            if label.strip() and number.isdigit() and int(number) >= 1:
                row = repo.versions.latest_model_version(session, label, int(number), scope=scope)
            else:
                row = repo.versions.latest_model_version(session, name, scope=scope)
            job = (
                repo.versions.job_of_version(session, row.id, scope=scope)
                if row is not None
                else None
            )
        if row is None:
            return None
        return Version(
            name=row.name,
            version=row.version,
            path=row.path,
            job_id=str(job.id) if job is not None else None,
            fine_tuned_id=job_fine_tuned_id(job) if job is not None else None,
        )


def _askable(name: str) -> bool:
    """Whether ``name`` could be stored at all (a NUL or lone surrogate, a blank name, or a
    name longer than the column would be a database error instead of an unknown model)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return bool(name.strip()) and len(name) <= 500 and "\x00" not in name


def _job_id_of(name: str) -> uuid.UUID | None:
    text = name
    if name.startswith(FT_PREFIX):
        parts = name[len(FT_PREFIX) :].rsplit(":", 2)
        if len(parts) != 3:
            return None
        text = parts[2]
    try:
        return uuid.UUID(text)
    except ValueError:
        return None

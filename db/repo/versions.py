"""Model versions: the fine-tuned models a job registered, newest first per name."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import values as v
from db.models import (
    FinetuneJob,
    ModelVersion,
)
from db.repo.rows import dialect_insert
from db.repo.scope import Scope
from db.values import InvalidValue


def register_model_version(
    session: Session,
    name: str,
    base_model: str,
    path: str | os.PathLike[str],
    weights_sha256: str,
    metrics: dict[str, Any] | None,
    *,
    project_id: str,
    size_bytes: int | None = None,
) -> ModelVersion:
    """Register a saved model as the next version of ``name`` (1, 2, ...) in ``project_id``
    (names are a project's own: each project numbers its versions of a name from 1).

    Registering the same weights at the same path again (a retried task) returns the
    existing version. Concurrent registrations of one name get distinct numbers: the
    unique (name, version) decides, and the loser takes the next number.
    """
    name = v.text(name, "name", max_len=500)
    base_model = v.text(base_model, "base_model", max_len=500)
    path = v.text(os.fspath(path) if isinstance(path, os.PathLike) else path, "path")
    digest = v.text(weights_sha256, "weights_sha256").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidValue(f"weights_sha256 must be 64 hex digits, got {weights_sha256!r}")
    metrics = {} if metrics is None else v.json_object(metrics, "metrics", strict=False)
    project_id = v.text(project_id, "project_id", max_len=40)

    same = select(ModelVersion).where(
        ModelVersion.project_id == project_id,
        ModelVersion.name == name,
        ModelVersion.path == path,
        ModelVersion.weights_sha256 == digest,
    )
    existing = session.scalars(same.order_by(ModelVersion.version).limit(1)).first()
    if existing is not None:
        return existing
    for _ in range(100):
        latest = select(func.max(ModelVersion.version)).where(
            ModelVersion.project_id == project_id, ModelVersion.name == name
        )
        version = (session.scalar(latest) or 0) + 1
        stmt = (
            dialect_insert(session, ModelVersion)
            .values(
                project_id=project_id,
                name=name,
                version=version,
                base_model=base_model,
                path=path,
                weights_sha256=digest,
                metrics=metrics,
                bytes=None if size_bytes is None else v.integer(size_bytes, "bytes", minimum=0),
            )
            .on_conflict_do_nothing(index_elements=["project_id", "name", "version"])
            .returning(ModelVersion.id)
        )
        new_id = session.execute(stmt).scalar()
        if new_id is not None:
            return session.get_one(ModelVersion, new_id)
    raise RuntimeError(f"could not allocate a version number for model {name!r}")


def latest_model_version(
    session: Session, name: str, version: int | None = None, *, scope: Scope
) -> ModelVersion | None:
    """Version ``version`` of ``name``, or its highest version when none is given (across
    every project, for a scope of all projects: the newest registered)."""
    query = select(ModelVersion).where(ModelVersion.name == v.text(name, "name", max_len=500))
    query = scope.filter(query, ModelVersion)
    if version is not None:
        query = query.where(ModelVersion.version == v.integer(version, "version", minimum=1))
    order = (ModelVersion.version.desc(), ModelVersion.created_at.desc())
    return session.scalars(query.order_by(*order).limit(1)).first()


def job_of_version(session: Session, version_id: int, *, scope: Scope) -> FinetuneJob | None:
    """The job that registered a version (None for versions registered otherwise)."""
    query = select(FinetuneJob).where(
        FinetuneJob.model_version_id == v.integer(version_id, "model_version_id")
    )
    return session.scalars(scope.filter(query, FinetuneJob).limit(1)).first()


def list_model_versions(session: Session, limit: int = 500, *, scope: Scope) -> list[ModelVersion]:
    query = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
    query = scope.filter(query, ModelVersion)
    return list(session.scalars(query.limit(v.integer(limit, "limit", minimum=1))))


def list_version_paths(session: Session, *, scope: Scope) -> list[str]:
    """The folders of every version in ``scope`` (who may name a job's output folder)."""
    return list(session.scalars(scope.filter(select(ModelVersion.path), ModelVersion)))


def get_model_version(session: Session, version_id: int, *, scope: Scope) -> ModelVersion | None:
    return scope.visible(session.get(ModelVersion, v.integer(version_id, "model_version_id")))


def delete_model_version(session: Session, version_id: int, *, scope: Scope) -> bool:
    """Forget a registered version (its job keeps its history, with no version)."""
    row = get_model_version(session, version_id, scope=scope)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True

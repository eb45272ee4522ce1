"""The FastAPI application: ``create_app()`` (``embedctl serve`` runs it under uvicorn).

With no broker configured (the embedded default) the app runs the in-process Celery
worker for its lifetime and migrates its SQLite file on start, the way ``embedctl
validate`` does: the same routes and the same tasks, with no services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import errors
from api.limits import BodyCapMiddleware
from api.metrics import Metrics, MetricsMiddleware
from api.routes import (
    batches,
    datasets,
    embeddings,
    evaluations,
    files,
    fine_tuning,
    health,
    models,
    organization,
    page,
    usage,
    validations,
)
from api.schemas import ErrorResponse
from core.config import get_settings

# Statuses any route may answer with, all in the OpenAI error shape (published, so the
# schema a client is generated from, and the property tests, know about them).
ERROR_STATUSES = {
    "400": "invalid request",
    "401": "missing or wrong API key",
    "403": "not allowed",
    "404": "no such object (or route)",
    "409": "conflict (an Idempotency-Key reused with another body, a file in use)",
    "413": "request too large",
    "429": "over a project's rate limit (rate_limit_exceeded, with Retry-After) or storage "
    "quota (insufficient_quota)",
    "500": "server error (no details: they are in the server log)",
    "502": "a worker failed",
    "503": "the broker is unavailable",
    "504": "no worker answered in time",
}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    from workers.app import embedded_worker, is_embedded

    settings = get_settings()
    if settings.database_url.startswith("sqlite"):
        from db import migrate

        migrate.upgrade(settings.database_url)
    if not is_embedded(settings):
        yield
        return
    from workers.app import app as celery

    # The memory broker's polling interval is the workers' own (workers.app.celery_config).
    with embedded_worker(celery):
        yield


def create_app() -> FastAPI:
    app = FastAPI(
        title="embedding-infra",
        version="1.0",
        description="OpenAI-compatible API for embeddings, files, fine-tuning, batches, "
        "validation runs and A/B evaluations. See docs/api.md.",
        lifespan=_lifespan,
    )
    app.state.metrics = Metrics()
    errors.install(app)
    routers = (
        health,
        embeddings,
        models,
        files,
        fine_tuning,
        batches,
        validations,
        evaluations,
        datasets,
        organization,
        usage,
    )
    for module in (*routers, page):
        app.include_router(module.router)
    app.add_middleware(BodyCapMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema with our error answers: 400 instead of its 422, and every error
    status in the OpenAI shape."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in (("ErrorResponse", ErrorResponse),):
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in model_schema.pop("$defs", {}).items():
            components[def_name] = definition
        components[name] = model_schema
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    error = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    }
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, text in ERROR_STATUSES.items():
                if status not in responses:
                    responses[status] = {"description": text, **error}
    app.openapi_schema = schema
    return schema

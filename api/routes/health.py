"""``/health`` (the process answers), ``/ready`` (database and broker reachable), ``/metrics``.

``/ready`` also lists the gpu workers' children and the device each owns, as their
presence records on the broker say (``workers.lifeline.worker_presence.devices``):
``{"<node>": {"0": "cuda:0", "1": "cuda:1"}}``. Informational: it never makes the API
unready (an API may well start before its workers).

Probes carry no key (load balancers and orchestrators call them); ``/metrics`` needs one
when keys are configured, like every data route. Each readiness check runs with a short
deadline in a thread of its own, so an unreachable server makes ``/ready`` a quick 503,
never a hung probe.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from api.auth import require_operator

router = APIRouter()
READY_TIMEOUT_S = 3.0
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="ready")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]
    devices: dict[str, dict[str, str]] = {}  # gpu worker node -> child index -> device


@router.get("/health", response_model=Health, tags=["operations"])
def health() -> Health:
    return Health(status="ok")


def _database() -> None:
    from sqlalchemy import text

    from db.session import get_engine

    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def _broker() -> None:
    from workers.app import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=READY_TIMEOUT_S)


def _devices() -> dict[str, dict[str, str]]:
    """Each gpu worker's children and their devices, read within the probe's deadline."""
    from core.config import get_settings
    from workers.lifeline.worker_presence import devices

    future = _pool.submit(devices, get_settings().broker_url)
    try:
        found = future.result(timeout=READY_TIMEOUT_S)
    except Exception:  # the broker check says why
        return {}
    return {node: {i: c["device"] for i, c in kids.items()} for node, kids in found.items()}


def _run(check: Callable[[], None]) -> str:
    started = time.monotonic()
    future = _pool.submit(check)
    try:
        future.result(timeout=READY_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        return f"timeout after {READY_TIMEOUT_S:g} s"
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return f"ok ({(time.monotonic() - started) * 1000:.0f} ms)"


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "database or broker unreachable"}},
    tags=["operations"],
)
def ready() -> JSONResponse:
    checks = {"database": _run(_database), "broker": _run(_broker)}
    ok = all(v.startswith("ok") for v in checks.values())
    body = Readiness(
        status="ready" if ok else "unavailable",
        checks=checks,
        devices=_devices() if ok else {},
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get(
    "/metrics",
    dependencies=[Depends(require_operator)],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    tags=["operations"],
)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

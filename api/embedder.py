"""Embeddings through the workers: the ``embedding.embed`` task, sent by name to the gpu queue.

The API process never loads a model; it sends the task's JSON payload and waits for the
reply (with a deadline: 504 after ``EMBEDDING_API_EMBED_TIMEOUT_S``). An error the task
raises for the request itself (bad payload, unknown model, path outside the roots, a
dimension the model refuses) is the client's 400; any other failure is a 502.
"""

from __future__ import annotations

import logging
from typing import Any

from api.errors import APIError
from embedding.config import get_settings

log = logging.getLogger(__name__)

EMBED_TASK = "embedding.embed"
# Exceptions the task raises for a bad request (matched by name: the reply carries the
# exception's class name and message, JSON only).
CLIENT_ERRORS = {
    "PayloadError": (400, "invalid_value"),
    "UnknownModel": (404, "model_not_found"),
    "PathNotAllowed": (400, "model_not_allowed"),
    "ModelUnavailable": (404, "model_not_found"),
    "ValueError": (400, "invalid_value"),
    "TypeError": (400, "invalid_value"),
}


def embed(texts: list[str], model: str, truncate_dim: int | None) -> dict[str, Any]:
    """The task's reply: ``{"model", "dim", "rows", "tokens", "encoding": "base64",
    "vectors_b64"}`` (base64: bit-exact float32, the cheapest to move)."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from workers.app import GPU_QUEUE, app

    payload: dict[str, Any] = {"texts": texts, "model": model, "encoding": "base64"}
    if truncate_dim is not None:
        payload["truncate_dim"] = truncate_dim
    try:
        result = app.send_task(EMBED_TASK, kwargs=payload, queue=GPU_QUEUE)
    except Exception as exc:
        log.warning("embed: broker unavailable (%s)", type(exc).__name__)
        raise APIError(503, "The task broker is unavailable.", code="broker_unavailable") from None
    timeout = get_settings().api_embed_timeout_s
    try:
        # A polling backend (the embedded cache) is asked every 5 ms; Redis pushes the reply.
        return result.get(timeout=timeout, interval=0.005, disable_sync_subtasks=False)
    except CeleryTimeout:
        result.forget()
        raise APIError(
            504, f"No embedding worker answered within {timeout:g} s.", code="worker_timeout"
        ) from None
    except Exception as exc:
        name = type(exc).__name__
        if name in CLIENT_ERRORS:
            status, code = CLIENT_ERRORS[name]
            raise APIError(
                status, str(exc), param="model" if status == 404 else None, code=code
            ) from None
        log.error("embed task failed: %s: %s", name, exc)
        raise APIError(502, "The embedding worker failed.", code="worker_error") from None

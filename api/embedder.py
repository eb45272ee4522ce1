"""Embeddings through the workers: the ``embedding.embed`` task, sent by name to the embed queue.

The API process never loads a model. A request whose texts are all in the embedding cache
is answered from it (:mod:`api.cache_lookup`); otherwise concurrent requests for the same
model and settings are coalesced into one task (:mod:`api.coalescer`), whose JSON reply
the API waits for (with a deadline: 504 after ``EMBEDDING_API_EMBED_TIMEOUT_S``). An error
the task raises for the request itself (bad payload, unknown model, path outside the
roots, a dimension the model refuses) is the client's 400; any other failure is a 502.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Hashable
from typing import Any

import numpy as np

from api import cache_lookup
from api.coalescer import Coalescer
from api.errors import APIError
from core.config import get_settings
from embedding.inference.device_profile import CPU_PROFILE

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

# Embedded (no broker), one solo worker thread takes embed tasks one at a time: one group
# running and one waiting keep it busy, and the calls after them gather into the next group
# (api.coalescer). With a broker, embed workers batch across tasks themselves (embed_service).
EMBEDDED_IN_FLIGHT = 2

_coalescer: Coalescer | None = None
_coalescer_lock = threading.Lock()


def coalescer() -> Coalescer:
    from workers.app import is_embedded

    global _coalescer
    with _coalescer_lock:
        if _coalescer is None:
            settings = get_settings()
            _coalescer = Coalescer(
                send_task,
                wait_s=settings.api_coalesce_wait_ms / 1000.0,
                # The API does not know the workers' device: a group is the CPU's pass, and
                # a GPU worker merges groups again in its own batcher (embed_service).
                token_budget=CPU_PROFILE.encode_token_budget,
                max_texts=settings.max_texts_per_request,
                max_in_flight=EMBEDDED_IN_FLIGHT if is_embedded(settings) else None,
            )
        return _coalescer


def embed(
    texts: list[str], model: str, truncate_dim: int | None, cache: bool = True
) -> dict[str, Any]:
    """``{"rows", "dim", "tokens", "matrix"}`` for these texts, rows in input order:
    from the cache when every text is there, else from a (coalesced) task."""
    if cache:
        hit = cache_lookup.lookup(model, truncate_dim, texts)
        if hit is not None:
            return hit
    reply = coalescer().embed((model, truncate_dim, cache), texts)
    if cache:
        cache_lookup.remember(model, reply)
    return reply


def send_task(key: Hashable, texts: list[str]) -> dict[str, Any]:
    """One ``embedding.embed`` task; the reply with its base64 matrix decoded (``matrix``)."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    from workers.app import EMBED_QUEUE, app

    model, truncate_dim, cache = key  # type: ignore[misc]
    payload: dict[str, Any] = {"texts": texts, "model": model, "encoding": "base64"}
    if truncate_dim is not None:
        payload["truncate_dim"] = truncate_dim
    if not cache:
        payload["cache"] = False
    try:
        result = app.send_task(EMBED_TASK, kwargs=payload, queue=EMBED_QUEUE)
    except Exception as exc:
        log.warning("embed: broker unavailable (%s)", type(exc).__name__)
        raise APIError(503, "The task broker is unavailable.", code="broker_unavailable") from None
    timeout = get_settings().api_embed_timeout_s
    try:
        # A polling backend (the embedded cache) is asked every 5 ms; Redis pushes the reply.
        reply = result.get(timeout=timeout, interval=0.005, disable_sync_subtasks=False)
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
    raw = base64.b64decode(reply.pop("vectors_b64"))
    reply["matrix"] = np.frombuffer(raw, dtype="<f4").reshape(reply["rows"], reply["dim"])
    return reply

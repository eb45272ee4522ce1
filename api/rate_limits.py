"""Per-project rate limits of ``POST /v1/embeddings``: requests per minute
(``projects.embeddings_rpm``) and tokens per minute (``projects.embeddings_tpm``).

The counts live in the ``limits`` library's storage at ``EMBEDDING_RATE_LIMIT_URL``: by
default the broker's Redis, so every API process counts against the same limit; without a
broker (the embedded default, one process) its memory. The limits themselves are read from
the project's row on every request, so a change holds from the next request on.

**Fixed windows** of one minute, starting at a project's first request in the window (the
storage's key expires a minute after it is made), not moving windows, because:

* tokens are known only after the worker embedded them, so they are *charged after*, and
  the charge must stick even when it overshoots the limit (the estimate was low). A fixed
  window's hit is one ``INCRBY`` that always adds; a moving window refuses (and drops) a
  cost that does not fit;
* a moving window stores one entry per unit of cost: a request of 8,000 tokens would push
  8,000 list entries into Redis; a fixed window keeps one counter per project and minute.

The price is a burst of up to twice a limit across a window's edge, which per-minute
limits of a shared fleet tolerate.

A request is admitted (:func:`admit`) when its estimated tokens
(:func:`~workers.serving.embed_batching.estimated_tokens`) fit in what is left of the token
window, and it counts one request (a refused request counts too, as at OpenAI: resending
at once does not get through); the worker's real count is then charged (:func:`charge`).
Over a limit: 429 in OpenAI's shape (code ``rate_limit_exceeded``) with ``Retry-After`` and
the ``x-ratelimit-*`` headers, which successful answers carry too.

When the storage cannot be reached the request is served without limits (a warning in the
log): a limiter outage must not take embeddings down with it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from api.errors import APIError
from core.config import Settings, get_settings, redact_url

log = logging.getLogger(__name__)

REQUESTS, TOKENS = "requests", "tokens"
_NAMESPACE = "embeddings"

_limiters: dict[str, Any] = {}
_lock = threading.Lock()


def storage_url(settings: Settings | None = None) -> str:
    """``EMBEDDING_RATE_LIMIT_URL``, else the broker when it is a Redis, else ``memory://``."""
    settings = settings or get_settings()
    if settings.rate_limit_url:
        return settings.rate_limit_url
    broker = settings.broker_url or ""
    if broker.startswith(("redis://", "rediss://")):
        return broker
    return "memory://"


def limiter() -> Any:
    """The process's fixed-window limiter on :func:`storage_url` (made on first use)."""
    from limits.storage import storage_from_string
    from limits.strategies import FixedWindowRateLimiter

    url = storage_url()
    with _lock:
        found = _limiters.get(url)
        if found is None:
            options: dict[str, Any] = {}
            if url.startswith(("redis://", "rediss://")):
                options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
            found = FixedWindowRateLimiter(storage_from_string(url, **options))
            _limiters[url] = found
            log.info("embedding rate limits counted at %s", redact_url(url))
        return found


def _item(kind: str, amount: int) -> Any:
    from limits import RateLimitItemPerMinute

    return RateLimitItemPerMinute(amount, namespace=f"{_NAMESPACE}-{kind}")


@dataclass
class Admission:
    """A request let through: what to charge afterwards and the headers to answer with."""

    project_id: str
    rpm: int | None
    tpm: int | None
    headers: dict[str, str] = field(default_factory=dict)
    degraded: bool = False  # the storage failed: no limits for this request


class RateLimited(APIError):
    """429 over ``limit`` (``requests`` or ``tokens``)."""

    def __init__(self, limit: str, message: str, headers: dict[str, str]) -> None:
        # OpenAI's shape: type names the limit (``requests`` or ``tokens``).
        super().__init__(429, message, code="rate_limit_exceeded", type=limit, headers=headers)
        self.limit = limit


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s`` (rounded up)."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms" if seconds > 0 else "0s"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _window(kind: str, amount: int, project_id: str) -> tuple[int, float]:
    """(remaining, seconds until the window resets) of one limit."""
    stats = limiter().get_window_stats(_item(kind, amount), project_id)
    return max(0, int(stats.remaining)), max(0.0, float(stats.reset_time) - time.time())


def _headers(project_id: str, rpm: int | None, tpm: int | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for kind, amount in ((REQUESTS, rpm), (TOKENS, tpm)):
        if amount is None:
            continue
        remaining, reset = _window(kind, amount, project_id)
        out[f"x-ratelimit-limit-{kind}"] = str(amount)
        out[f"x-ratelimit-remaining-{kind}"] = str(remaining)
        out[f"x-ratelimit-reset-{kind}"] = duration(reset)
    return out


def _refuse(
    kind: str, project_id: str, rpm: int | None, tpm: int | None, message: str
) -> RateLimited:
    headers = _headers(project_id, rpm, tpm)
    _, reset = _window(kind, rpm if kind == REQUESTS else tpm, project_id)  # type: ignore[arg-type]
    # Redis keeps whole seconds of a key's life (rounded): half a second more, rounded up,
    # is never too early, so a client that waits Retry-After finds the window renewed.
    headers["retry-after"] = str(max(1, math.ceil(reset + 0.5)))
    return RateLimited(kind, message, headers)


def admit(project_id: str, rpm: int | None, tpm: int | None, estimate: int) -> Admission:
    """Before the work: refuse (:class:`RateLimited`) a request whose ``estimate`` of tokens
    cannot fit in the project's token window, or one over its requests per minute; else
    count the request."""
    admission = Admission(project_id, rpm, tpm)
    if rpm is None and tpm is None:
        return admission
    try:
        if tpm is not None:
            if estimate > tpm:
                raise _refuse(
                    TOKENS,
                    project_id,
                    rpm,
                    tpm,
                    f"Request too large: about {estimate} tokens, over the project's limit of "
                    f"{tpm} tokens per minute. Send fewer or shorter inputs.",
                )
            if not limiter().test(_item(TOKENS, tpm), project_id, cost=estimate):
                remaining, _ = _window(TOKENS, tpm, project_id)
                raise _refuse(
                    TOKENS,
                    project_id,
                    rpm,
                    tpm,
                    f"Rate limit reached for tokens per minute: limit {tpm}, remaining "
                    f"{remaining}, requested about {estimate}. Try again after the time in "
                    "Retry-After.",
                )
        if rpm is not None and not limiter().hit(_item(REQUESTS, rpm), project_id):
            raise _refuse(
                REQUESTS,
                project_id,
                rpm,
                tpm,
                f"Rate limit reached for requests per minute: limit {rpm}. Try again after "
                "the time in Retry-After.",
            )
    except RateLimited:
        raise
    except Exception as exc:  # the storage is down or refuses: serve, unlimited
        log.warning("rate limits unavailable, request not limited (%s)", type(exc).__name__)
        admission.degraded = True
    return admission


def charge(admission: Admission, tokens: int) -> dict[str, str]:
    """After the work: charge the real token count (even past the limit: the estimate was
    low) and answer with the ``x-ratelimit-*`` headers of the project's limits."""
    if admission.degraded or (admission.rpm is None and admission.tpm is None):
        return {}
    try:
        if admission.tpm is not None and tokens > 0:
            limiter().hit(_item(TOKENS, admission.tpm), admission.project_id, cost=tokens)
        return _headers(admission.project_id, admission.rpm, admission.tpm)
    except Exception as exc:
        log.warning("rate limits unavailable, tokens not charged (%s)", type(exc).__name__)
        return {}

"""Database writes that wait out an outage instead of losing work.

A fine-tune epoch is minutes of work: a database restart must delay its record, not lose
it. Only connection-level errors are retried — an ``OperationalError`` (server gone,
connection refused, SQLite's "database is locked") or a ``DBAPIError`` whose connection
was invalidated; a bad value is the caller's bug and fails at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEADLINE_S = 180.0  # longer than a PostgreSQL restart or failover
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0


def is_transient(exc: BaseException) -> bool:
    """True for errors that say the database is unreachable, not that the write is wrong."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def with_db_retry(
    action: Callable[[], T],
    what: str,
    deadline_s: float = DEADLINE_S,
    first_delay_s: float = FIRST_DELAY_S,
    max_delay_s: float = MAX_DELAY_S,
) -> T:
    """Run ``action``, retrying transient errors with exponential backoff until ``deadline_s``.

    The waits are ``first_delay_s`` doubling up to ``max_delay_s``; after ``deadline_s``
    (counted from the first try) the last error is raised as it was. ``what`` names the
    write in the warning logged before each wait.
    """

    def warn(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        cause = getattr(exc, "orig", None) or exc
        log.warning(
            "%s: database unavailable (%s); retrying in %.1f s",
            what,
            type(cause).__name__,
            state.next_action.sleep if state.next_action else 0.0,
        )

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential(multiplier=first_delay_s, max=max_delay_s),
        stop=stop_after_delay(deadline_s),
        before_sleep=warn,
        reraise=True,
    )
    return retrying(action)

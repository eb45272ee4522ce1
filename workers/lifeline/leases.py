"""A row's lease kept fresh from a thread while its work runs.

A task that records a row ``running`` refreshes a ``heartbeat_at`` on it every third of
``EMBEDDING_JOB_LEASE_S``; when its worker dies the lease goes stale, and the lifeline
(:mod:`workers.lifeline.duties`) knows the row will never be finished by anyone and rescues it.
Fine-tune jobs have their own (``workers.jobs.finetune_job``); evaluations and validation runs
use this one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from core.config import get_settings
from db.session import session_scope

log = logging.getLogger(__name__)


@contextmanager
def lease(name: str, beat: Callable[..., bool]) -> Iterator[None]:
    """Call ``beat(session)`` at once and then every third of the lease until the block
    ends or ``beat`` returns False (the row is no longer running). A failed beat (a
    database blip) is logged and the next one tries again."""
    every = max(0.2, get_settings().job_lease_s / 3)
    stop = threading.Event()

    def refresh() -> bool:
        try:
            with session_scope() as session:
                return bool(beat(session))
        except Exception as exc:
            log.warning("%s: heartbeat failed: %s", name, type(exc).__name__)
            return True

    def run() -> None:
        while not stop.wait(every):
            if not refresh():
                return

    refresh()
    thread = threading.Thread(target=run, name=f"lease-{name[:24]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)

"""Warm shutdown of a fine-tune: checkpoint at once, give the lease back, re-queue.

A worker told to stop (SIGTERM: ``docker stop``, a deploy, a scale-down) would otherwise
either wait hours for the job to end or die and leave the job to wait out its lease. Two
ways the news reaches the pool process that trains:

* the worker's main process gets the signal: Celery sends ``worker_shutting_down`` there,
  and :func:`_note_shutdown` sets an event shared with the pool processes (created at
  import, in the main process, before the pool forks);
* the signal reaches the pool process itself (a process-group kill):
  :func:`sigterm_noted` has replaced its SIGTERM handler while the job runs.

The trainer's ``should_stop`` reads :func:`requested` before every batch.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.signals import worker_shutting_down

_shared = multiprocessing.get_context("fork").Event()
_local = threading.Event()


def requested() -> bool:
    return _local.is_set() or _shared.is_set()


def _note_shutdown(**_: Any) -> None:
    _shared.set()


@contextmanager
def sigterm_noted() -> Iterator[None]:
    """While a job runs in this process's main thread, SIGTERM asks for a warm stop; a
    second one ends the process as before."""
    if threading.current_thread() is not threading.main_thread():
        yield  # an in-process worker thread: signals belong to the host program
        return

    def handler(signum: int, frame: Any) -> None:
        if _local.is_set():
            signal.signal(signal.SIGTERM, previous)
            signal.raise_signal(signal.SIGTERM)
        _local.set()

    _local.clear()  # a signal to an earlier job of this process is no news for this one
    previous = signal.signal(signal.SIGTERM, handler) or signal.SIG_DFL
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


worker_shutting_down.connect(_note_shutdown, weak=False)

"""Before sending work, ask whether any worker would take it, and wait for one starting.

A message to a queue nobody consumes waits in Redis for ever, and its sender until its
own deadline. ``embedctl validate`` (which CI runs) asks the workers first, with Celery's
``inspect().active_queues()`` broadcast, and fails with the queue named when none would.

The question is asked again every :data:`ASK_EVERY_S` seconds, not once: a broadcast
reaches only the workers listening when it is sent, and a worker that CI started a moment
ago is still importing torch (6-7 s here, cold). It keeps asking up to the caller's
``timeout`` while the broker shows a worker starting for a missing queue
(:mod:`workers.lifeline.worker_presence`); with no such sign it gives up after
:data:`NO_SIGN_S` seconds, so a CI with no worker at all still fails at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from celery import Celery

from workers.app import CPU_QUEUE, TASK_ROUTES
from workers.lifeline.worker_presence import starting_queues

# One round: the broadcast's wait for replies (milliseconds when idle; a worker still
# starting its other pools on a loaded machine can take over a second).
ASK_EVERY_S = 2.0
# With no worker consuming a queue and none announced as starting, stop asking after this
# long: the announcement is the worker command's first act (0.3-0.6 s after launch here,
# more under load), so a worker launched just before us has written it by then; and a CI
# with no worker at all still fails well within 30 s.
NO_SIGN_S = 10.0


class NoWorker(RuntimeError):
    """No live worker consumes a queue the work needs."""


def queues_of(task_names: Iterable[str]) -> set[str]:
    """The queues the named tasks are routed to (unrouted tasks go to the default, cpu)."""
    return {TASK_ROUTES.get(name, {}).get("queue", CPU_QUEUE) for name in task_names}


def require_consumers(app: Celery, queues: Iterable[str], timeout: float = 60.0) -> None:
    """Return once a live worker consumes each of ``queues``; raise :class:`NoWorker` when
    ``timeout`` seconds pass first, or :data:`NO_SIGN_S` with no worker starting for a
    missing queue. The broker connection is tried once (at most ``NO_SIGN_S``)."""
    needed = set(queues)
    started = time.monotonic()
    deadline = started + max(timeout, 0.0)
    with app.connection_for_write() as conn:
        try:
            conn.ensure_connection(max_retries=1, timeout=NO_SIGN_S)
        except Exception as exc:
            raise NoWorker(f"the broker did not answer within {NO_SIGN_S:g} s: {exc}") from None
        while True:
            wait = max(0.1, min(ASK_EVERY_S, deadline - time.monotonic()))
            replies = app.control.inspect(timeout=wait, connection=conn).active_queues() or {}
            consumed = {queue["name"] for worker in replies.values() for queue in worker or []}
            missing = sorted(needed - consumed)
            if not missing:
                return
            now = time.monotonic()
            announced = starting_queues(app.conf.broker_url) & set(missing)
            if now >= deadline or (not announced and now - started >= min(NO_SIGN_S, timeout)):
                break
    waited = time.monotonic() - started
    workers = ", ".join(sorted(replies)) or "none answered"
    starting = (
        f"; a worker announced as starting for {sorted(announced)} did not listen within "
        f"{waited:.0f} s (--worker-timeout)"
        if announced
        else ""
    )
    raise NoWorker(
        "; ".join(f"no worker is consuming queue {q}" for q in missing)
        + f" (workers: {workers}; asked for {waited:.0f} s{starting}; start one with "
        f"`embedctl worker --queues {','.join(missing)}`)"
    )

"""Before sending work, ask whether any worker would take it.

A message to a queue nobody consumes waits in Redis for ever, and its sender until its
own deadline. ``embedctl validate`` (which CI runs) asks the workers first, with Celery's
``inspect().active_queues()`` broadcast bounded by a few seconds, and fails at once with
the queue named.
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery

from workers.app import CPU_QUEUE, TASK_ROUTES


class NoWorker(RuntimeError):
    """No live worker consumes a queue the work needs."""


def queues_of(task_names: Iterable[str]) -> set[str]:
    """The queues the named tasks are routed to (unrouted tasks go to the default, cpu)."""
    return {TASK_ROUTES.get(name, {}).get("queue", CPU_QUEUE) for name in task_names}


def require_consumers(app: Celery, queues: Iterable[str], timeout: float = 3.0) -> None:
    """Raise :class:`NoWorker` unless a live worker consumes each of ``queues``.

    Bounded: the broker connection is tried once (``timeout`` seconds), the workers have
    ``timeout`` seconds to answer.
    """
    with app.connection_for_write() as conn:
        try:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        except Exception as exc:
            raise NoWorker(f"the broker did not answer within {timeout:g} s: {exc}") from None
        replies = app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
    consumed = {queue["name"] for worker in replies.values() for queue in worker or []}
    missing = sorted(set(queues) - consumed)
    if missing:
        workers = ", ".join(sorted(replies)) or "none answered"
        raise NoWorker(
            "; ".join(f"no worker is consuming queue {q}" for q in missing)
            + f" (workers: {workers}; start one with `embedctl worker --queues {','.join(missing)}`)"
        )

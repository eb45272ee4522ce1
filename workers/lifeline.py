"""The periodic duties that keep jobs moving with no operator (after Oban's Lifeline).

* :func:`relay` sends what the outbox still holds (a job submitted while the broker was
  down);
* :func:`rescue` re-sends the jobs whose message is gone — ``queued`` and sent
  ``rescue_after_s`` ago with no message waiting in the gpu queue (a flushed or restarted
  broker), or ``running`` with an expired lease (its worker died, its message sits in the
  dead worker's unacked set until the visibility timeout) — and ends the jobs that must
  not run again: past ``job_max_attempts`` (failed, with the reason) or cancelled while
  their worker was gone;
* and fails the A/B evaluations left ``running`` longer than the compare task's hard time
  limit allows (:func:`fail_lost_evaluations`): a compare is cheap to ask for again, so it
  is not re-run, but it must not stay ``running`` forever.

Re-sending is always safe: the worker's database claim makes a duplicate message a no-op.
The duties run from ``embedctl beat`` (Celery beat with celery-redbeat, whose Redis lock
keeps a second beat process idle), from :class:`DutyLoop` in the embedded default, and
:func:`relay` once more when a worker starts (``worker_ready``).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from celery.signals import worker_init, worker_ready, worker_shutdown

from db import repo
from db.models import utcnow
from db.session import session_scope
from embedding.config import get_settings
from workers.outbox import relay_unsent

log = logging.getLogger(__name__)

FINETUNE_QUEUE = "gpu"
# kombu's Redis transport keeps priority levels as extra lists "<queue>\x06\x16<n>".
_PRIORITY_SEP = "\x06\x16"


def relay() -> int:
    """Send what the outbox holds (a second's grace for submitters sending right now)."""
    return relay_unsent(older_than_s=1.0)


def gave_up_reason(attempts: int, worker: str | None) -> str:
    return (
        f"gave up after {attempts} attempts: the worker running it was lost each time "
        f"(last: {worker})"
    )


def rescue() -> dict[str, int]:
    """One pass over the jobs that may have lost their message; returns what it did."""
    settings = get_settings()
    now = utcnow()
    done = {"rescued": 0, "failed": 0, "cancelled": 0}
    done["evaluations_failed"] = len(fail_lost_evaluations(now))
    with session_scope() as session:
        jobs = [
            (str(j.id), j.status, j.attempts, j.worker, j.cancel_requested)
            for j in repo.jobs_to_rescue(
                session,
                sent_before=now - timedelta(seconds=settings.rescue_after_s),
                lease_expired_before=now - timedelta(seconds=settings.job_lease_s),
            )
        ]
    waiting = messages_waiting() if jobs else None  # the broker is read only when needed
    for job_id, status, attempts, worker, cancel in jobs:
        with session_scope() as session:
            if cancel:
                reason = "cancelled by request; its worker was gone"
                if repo.finish_job(session, job_id, "cancelled", error=reason):
                    done["cancelled"] += 1
                continue
            if status == "running" and attempts >= settings.job_max_attempts:
                reason = gave_up_reason(attempts, worker)
                if repo.finish_job(session, job_id, "failed", error=reason):
                    done["failed"] += 1
                continue
        if waiting is not None and job_id in waiting:
            continue  # its message waits in the queue: a worker will get it
        why = "its lease expired (worker lost)" if status == "running" else "its message is gone"
        if resend(job_id, why):
            done["rescued"] += 1
    if any(done.values()):
        log.warning("lifeline: %s", done)
    return done


def fail_lost_evaluations(now: datetime) -> list[str]:
    """Fail the evaluations whose run started longer ago than the compare task's hard time
    limit (plus a minute): Celery would have ended such a run, so its worker is gone.

    ``embedding.compare`` sets no limit of its own, so the app's ``task_time_limit`` is its
    limit (the test checks that the two agree). Read from the config, not the task
    registry: this module is imported by ``workers.tasks``, and the registry is empty until
    something imports that."""
    from workers.app import app

    limit_s = float(app.conf.task_time_limit or 0)
    if limit_s <= 0:
        return []  # no hard limit: no moment after which a run is surely dead
    reason = (
        f"lost: still running {limit_s + 60:.0f} s after it started, past the compare task's "
        f"hard time limit ({limit_s:.0f} s): its worker was killed. Ask for it again."
    )
    with session_scope() as session:
        return repo.fail_lost_evaluations(
            session, started_before=now - timedelta(seconds=limit_s + 60), reason=reason
        )


def resend(job_id: str, reason: str) -> bool:
    """Send ``embedding.finetune(job_id)`` again and record the rescue; False if the broker
    is away (the next pass tries again)."""
    from workers.app import app

    try:
        app.send_task("embedding.finetune", args=[job_id], task_id=job_id, queue=FINETUNE_QUEUE)
    except Exception as exc:
        log.warning("rescue of job %s not sent: %s", job_id, type(exc).__name__)
        return False
    with session_scope() as session:
        repo.mark_rescued(session, job_id, reason)
    return True


def messages_waiting() -> str | None:
    """The text of every message waiting in the gpu queue (not yet delivered), or None when
    the transport cannot be read (then every candidate is re-sent, at most once per
    ``rescue_after_s``). Job ids are looked up in it as substrings (task id and argument)."""
    from workers.app import app

    url = app.conf.broker_url or ""
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            return _redis_waiting(url)
        if url.startswith("memory://"):
            return _memory_waiting()
    except Exception as exc:
        log.warning("could not read the gpu queue: %s", type(exc).__name__)
    return None


def _redis_waiting(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = [FINETUNE_QUEUE] + [f"{FINETUNE_QUEUE}{_PRIORITY_SEP}{n}" for n in range(1, 10)]
        raw = [item for key in keys for item in client.lrange(key, 0, -1)]
    finally:
        client.close()
    return "\n".join(item.decode("utf-8", "replace") for item in raw)


def _memory_waiting() -> str:
    from kombu.transport.memory import Channel

    queue = Channel.queues.get(FINETUNE_QUEUE)
    return "\n".join(repr(m) for m in list(queue.queue)) if queue is not None else ""


def cancel_orphaned(job_id: str) -> bool:
    """Cancel at once a running job whose lease has expired (its worker is gone): nobody
    would read its cancel flag. True if this call cancelled it."""
    settings = get_settings()
    with session_scope() as session:
        job = repo.get_job(session, job_id)
        if job is None or job.status != "running" or not job.cancel_requested:
            return False
        beat = job.heartbeat_at
        if beat is not None and (utcnow() - beat).total_seconds() < settings.job_lease_s:
            return False
        return repo.finish_job(
            session, job_id, "cancelled", error="cancelled by request; its worker was gone"
        )


_in_process: dict[str, Any] = {"loop": None, "workers": set()}
_in_process_lock = threading.Lock()


def _start_in_process_duties(sender: Any = None, **_: Any) -> None:
    """``worker_init``: workers on the memory broker (the embedded default) have no beat;
    the first of them starts the duties in a thread, which runs until the last one's
    ``worker_shutdown`` (the embedded default runs two workers: one loop, not two)."""
    if sender is None or not _on_memory_broker(sender):
        return
    with _in_process_lock:
        _in_process["workers"].add(id(sender))
        if _in_process["loop"] is None:
            _in_process["loop"] = DutyLoop().start()


def _stop_in_process_duties(sender: Any = None, **_: Any) -> None:
    if sender is None or not _on_memory_broker(sender):
        return
    with _in_process_lock:
        _in_process["workers"].discard(id(sender))  # stop() may signal more than once
        loop = None if _in_process["workers"] else _in_process["loop"]
        if loop is not None:
            _in_process["loop"] = None
    if loop is not None:
        loop.stop()


def _on_memory_broker(worker: Any) -> bool:
    return str(worker.app.conf.broker_url).startswith("memory://")


def relay_at_worker_start(**_: Any) -> None:
    """``worker_ready``: send what the outbox holds, in a thread (never delay the start).
    (Sent by ``celery worker`` only: the embedded workers' duty loop relays at once.)"""

    def run() -> None:
        try:
            sent = relay()
            if sent:
                log.warning("relayed %d job(s) from the outbox at worker start", sent)
        except Exception as exc:
            log.warning("outbox relay at worker start failed: %s", type(exc).__name__)

    threading.Thread(target=run, name="relay-at-start", daemon=True).start()


class DutyLoop:
    """The duties in a thread of this process: the embedded default has no beat."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lifeline", daemon=True)

    def start(self) -> DutyLoop:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        settings = get_settings()
        every = {relay: settings.relay_every_s, rescue: settings.rescue_every_s}
        due = dict.fromkeys(every, 0.0)
        tick = max(0.1, min(every.values()) / 4)
        while True:
            for duty, period in every.items():
                now = time.monotonic()
                if now >= due[duty]:
                    due[duty] = now + period
                    try:
                        duty()
                    except Exception as exc:
                        log.warning("lifeline %s failed: %s", duty.__name__, type(exc).__name__)
            if self._stop.wait(tick):
                return


worker_ready.connect(relay_at_worker_start, weak=False)
worker_init.connect(_start_in_process_duties, weak=False)
worker_shutdown.connect(_stop_in_process_duties, weak=False)

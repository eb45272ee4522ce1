"""The periodic duties that keep jobs moving with no operator (after Oban's Lifeline).

* :func:`relay` sends what the outbox still holds (a job submitted while the broker was
  down);
* :func:`rescue` re-sends the jobs whose message is gone — ``queued`` and sent
  ``rescue_after_s`` ago with no message waiting in the gpu queue (a flushed or restarted
  broker), or ``running`` with an expired lease (its worker died, its message sits in the
  dead worker's unacked set until the visibility timeout) — and ends the jobs that must
  not run again: past ``job_max_attempts`` (failed, with the reason) or cancelled while
  their worker was gone;
* and rescues the other rows that a task leaves ``running``: an A/B evaluation whose lease
  expired (its worker died mid-compare) is re-run while it can be (a dataset a worker reads,
  under the attempts cap) and failed with the reason otherwise (inline pairs, a CLI run),
  its ``rescues`` saying which (:func:`rescue_evaluations`); a validation run with no check
  running (stale lease) and none waiting in the queues is ended ``error`` with the reason
  (:func:`end_lost_validation_runs`): its chord can no longer complete.

Re-sending is always safe: the worker's database claim makes a duplicate message a no-op.
The duties run from ``embedctl beat`` (Celery beat with celery-redbeat, whose Redis lock
keeps a second beat process idle), from :class:`DutyLoop` in the embedded default, and
:func:`relay` once more when a worker starts (``worker_ready``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from celery.signals import worker_init, worker_ready, worker_shutdown

from core.config import get_settings
from db import repo
from db.models import utcnow
from db.session import session_scope
from workers.jobs.outbox import relay_unsent

log = logging.getLogger(__name__)

FINETUNE_QUEUE = "gpu"
# kombu's Redis transport keeps priority levels as extra lists "<queue>\x06\x16<n>".
_PRIORITY_SEP = "\x06\x16"


def relay() -> int:
    """Send what the outbox holds (a second's grace for submitters sending right now)."""
    return relay_unsent()


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
    try:  # the fine-tune jobs below must be rescued even if this part fails
        rescued = rescue_evaluations(now)
        done["evaluations_rerun"] = rescued["rerun"]
        done["evaluations_failed"] = rescued["failed"]
        done["validation_runs_ended"] = len(end_lost_validation_runs(now))
    except Exception as exc:
        log.warning("lifeline: evaluations and validation runs: %s", type(exc).__name__)
    with session_scope() as session:
        jobs = [
            (str(j.id), j.status, j.attempts, j.worker, j.cancel_requested)
            for j in repo.jobs.jobs_to_rescue(
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
                if repo.jobs.finish_job(session, job_id, "cancelled", error=reason, lost=True):
                    done["cancelled"] += 1
                continue
            if status == "running" and attempts >= settings.job_max_attempts:
                reason = gave_up_reason(attempts, worker)
                if repo.jobs.finish_job(session, job_id, "failed", error=reason, lost=True):
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


COMPARE_TASK = "embedding.compare"


def rescue_evaluations(now: datetime) -> dict[str, int]:
    """Re-run or fail each ``running`` evaluation whose lease expired (its worker is gone).

    Re-run when a worker can read its data again (a ``dataset`` path; not inline pairs, which
    are not kept, nor a CLI run, whose process resolved the names) and it has run fewer than
    ``job_max_attempts`` times: back to ``queued`` and ``embedding.compare`` sent again (the
    claim makes a duplicate a no-op). Otherwise ``failed`` with the reason. Either way the
    row's ``rescues`` records what was done and why."""
    settings = get_settings()
    done = {"rerun": 0, "failed": 0}
    with session_scope() as session:
        lost = [
            (
                str(r.id),
                r.trigger,
                r.dataset,
                r.attempts,
                r.model_a,
                r.model_b,
                r.n_resamples,
                r.seed,
            )
            for r in repo.evaluations.lost_evaluations(
                session, lease_expired_before=now - timedelta(seconds=settings.job_lease_s)
            )
        ]
    for eid, trigger, dataset, attempts, model_a, model_b, n_resamples, seed in lost:
        lease = f"its lease expired ({settings.job_lease_s:g} s without a heartbeat: worker lost)"
        why_not = (
            "the CLI process that ran it is gone"
            if trigger == "cli"
            else "its pairs were inline and are not kept"
            if dataset is None
            else f"it was lost {attempts} times (attempts cap {settings.job_max_attempts})"
            if attempts >= settings.job_max_attempts
            else None
        )
        if why_not is not None:
            reason = f"lost: {lease}; not re-run: {why_not}. Ask for it again."
            with session_scope() as session:
                done["failed"] += repo.evaluations.fail_lost_evaluation(session, eid, reason)
            continue
        with session_scope() as session:
            reason = f"re-run (attempt {attempts + 1}): {lease}"
            if not repo.evaluations.requeue_lost_evaluation(session, eid, reason):
                continue
        payload = {
            "model_a": model_a, "model_b": model_b, "dataset": dataset,
            "n_resamples": n_resamples, "seed": seed, "evaluation_id": eid,
        }  # fmt: skip
        if _send(COMPARE_TASK, eid, kwargs=payload):
            done["rerun"] += 1
        # not sent (broker away): it stays queued; the evaluation's own row says re-run,
        # and the next send (a client retry) finds it queued
    return done


def end_lost_validation_runs(now: datetime) -> list[str]:
    """End ``error`` each validation run whose chord can no longer complete: ``running``
    since more than ``rescue_after_s``, no check running (its lease, taken when a check's
    message is received and kept by the check, older than ``job_lease_s`` and
    ``rescue_after_s``, or never taken) and no message of it waiting in the gpu or cpu
    queue (nor delivered unacked)."""
    settings = get_settings()
    with session_scope() as session:
        candidates = repo.validations.stale_validation_runs(
            session,
            started_before=now - timedelta(seconds=settings.rescue_after_s),
            # the longer of the two: a check between its receipt and its own lease thread
            lease_expired_before=now
            - timedelta(seconds=max(settings.job_lease_s, settings.rescue_after_s)),
        )
    if not candidates:
        return []
    waiting = messages_waiting(queues=("gpu", "cpu"), unacked=True)
    if waiting is None:
        return []  # the queues cannot be read: never end a run that may still be waiting
    ended = []
    reason = (
        "lost: no check of this run is running or waiting (its worker was killed mid-check), "
        "so its chord cannot complete; not re-run: start the validation again"
    )
    for run_id in candidates:
        if run_id in waiting:
            continue
        with session_scope() as session:
            if repo.validations.finish_validation_run(
                session, run_id, "error", f"error: {reason}", reason
            ):
                ended.append(run_id)
    return ended


def _send(task: str, task_id: str, **options: Any) -> bool:
    from workers.app import publisher

    try:
        publisher().send_task(
            task, task_id=f"{task_id}-{uuid.uuid4().hex[:8]}", queue=FINETUNE_QUEUE, **options
        )
    except Exception as exc:
        log.warning("lifeline: %s for %s not sent: %s", task, task_id, type(exc).__name__)
        return False
    return True


def resend(job_id: str, reason: str) -> bool:
    """Give a job whose message or worker is gone back to the fair-share order (the outbox)
    and record the rescue, then let the dispatcher send what the fleet has room for; False
    if the job ended meanwhile. (Its lost attempt's GPU time is charged once, to its last
    lease, when the next worker takes it over.)"""
    from workers.fleet.dispatch import dispatch

    with session_scope() as session:
        if not repo.jobs.mark_rescued(session, job_id, reason):
            return False
    dispatch()
    return True


def messages_waiting(
    queues: tuple[str, ...] = (FINETUNE_QUEUE,), unacked: bool = False
) -> str | None:
    """The text of every message waiting in ``queues`` (not yet delivered; with ``unacked``
    also those delivered and not yet acknowledged), or None when the transport cannot be
    read (then every candidate is re-sent, at most once per ``rescue_after_s``). Ids are
    looked up in it as substrings (task id and argument)."""
    from workers.app import app

    url = app.conf.broker_url or ""
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            return _redis_waiting(url, queues, unacked)
        if url.startswith("memory://") and not unacked:
            # (a memory worker's reserved messages cannot be seen: no answer with unacked)
            return _memory_waiting(queues)
    except Exception as exc:
        log.warning("could not read the queues %s: %s", queues, type(exc).__name__)
    return None


def _redis_waiting(url: str, queues: tuple[str, ...], unacked: bool) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = [
            f"{q}{sep}"
            for q in queues
            for sep in ["", *(f"{_PRIORITY_SEP}{n}" for n in range(1, 10))]
        ]
        raw = [item for key in keys for item in client.lrange(key, 0, -1)]
        if unacked:  # kombu's Redis transport: delivered, not yet acked (ack emulation)
            raw += list(client.hvals("unacked"))
    finally:
        client.close()
    return "\n".join(item.decode("utf-8", "replace") for item in raw)


def _memory_waiting(queues: tuple[str, ...]) -> str:
    from kombu.transport.memory import Channel

    found = [Channel.queues.get(q) for q in queues]
    return "\n".join(repr(m) for queue in found if queue is not None for m in list(queue.queue))


def cancel_orphaned(job_id: str) -> bool:
    """Cancel at once a running job whose lease has expired (its worker is gone): nobody
    would read its cancel flag. True if this call cancelled it."""
    settings = get_settings()
    with session_scope() as session:
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        if job is None or job.status != "running" or not job.cancel_requested:
            return False
        beat = job.heartbeat_at
        if beat is not None and (utcnow() - beat).total_seconds() < settings.job_lease_s:
            return False
        return repo.jobs.finish_job(
            session,
            job_id,
            "cancelled",
            error="cancelled by request; its worker was gone",
            lost=True,
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

"""The dispatcher: send waiting jobs while the fleet has free gpu slots, each time the job
:mod:`workers.fleet.fair_share` picks.

Called wherever a slot may have come free or a job may have arrived: a submit (the outbox),
a job's end (the gpu task), a rescue (the lifeline), and the beat's relay every few seconds
as a safety net. Passes are serialized across processes by a Redis lock on the broker (a
thread lock without Redis: the embedded default's one process), so two passes never both
fill the last slot. A job is sent through :func:`workers.jobs.messages.send`, which takes it
out of the outbox first: whatever runs, one message per job.

Limits are read from the database on every pass: a weight or quota changed while jobs wait
takes effect on the next dispatch.

A job of ``n_devices`` k holds k slots (:func:`workers.fleet.capacity.slots_of`): the job
fair share picks is sent only when k slots are free, and while it waits for them nothing is
sent past it (smaller jobs of projects further over their share would otherwise keep a
group from ever finding its slots free).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from core.config import get_settings
from db import repo
from db.session import session_scope
from workers.fleet.capacity import gpu_slots, largest_host, slots_of
from workers.fleet.fair_share import Project, pick
from workers.jobs.messages import send

log = logging.getLogger(__name__)

LOCK_KEY = "embedding:fleet-dispatch"
# A pass takes milliseconds to a second. The lock expires after this long: a pass that dies,
# or loses the broker before it can release (a Redis that keeps its data across a restart
# keeps the lock too), holds dispatching up for no longer than this.
LOCK_TIMEOUT_S = 5.0
_local_lock = threading.Lock()


@contextlib.contextmanager
def _one_pass_at_a_time() -> Iterator[bool]:
    """Hold the dispatch lock for a pass; yields False when another pass holds it for long
    (it will send what there is)."""
    from workers.app import app

    url = str(app.conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        with _local_lock:
            yield True
        return
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    lock = client.lock(LOCK_KEY, timeout=LOCK_TIMEOUT_S, blocking_timeout=LOCK_TIMEOUT_S)
    try:
        got = lock.acquire()
    except redis.RedisError as exc:
        log.warning("dispatch: no lock (%s); the next pass sends", type(exc).__name__)
        got = False
    try:
        yield got
    finally:
        if got:
            with contextlib.suppress(redis.RedisError):
                lock.release()
        client.close()


def projects_now(state: dict) -> dict[str, Project]:
    """Each waiting project's weight, quota, use and jobs in flight, read fresh."""
    half_life = get_settings().fair_share_half_life_days
    with session_scope() as session:
        used = repo.usage.recent_training_seconds(session, half_life)
        rows = {p.id: p for p in repo.projects.list_projects(session)}
    waiting_projects = {project_id for _, project_id in state["waiting"]}
    return {
        pid: Project(
            weight=rows[pid].weight if pid in rows else 1.0,
            max_running_jobs=rows[pid].max_running_jobs if pid in rows else None,
            used_s=used.get(pid, 0.0) + state["running_s"].get(pid, 0.0),
            in_flight=state["in_flight"].get(pid, 0),
        )
        for pid in waiting_projects
    }


def dispatch() -> int:
    """One pass: send waiting jobs while gpu slots are free; returns how many were sent."""
    sent = 0
    with _one_pass_at_a_time() as mine:
        if not mine:
            return 0
        slots = gpu_slots()
        host: int | None = None
        while True:
            with session_scope() as session:
                state = repo.jobs.fleet_state(session)
            asked = [*state["in_flight_devices"], *state["devices"].values()]
            if host is None and "all" in asked:
                host = largest_host()
            held = sum(slots_of(d, slots, host) for d in state["in_flight_devices"])
            if not state["waiting"] or held >= slots:
                break
            job_id = pick(state["waiting"], projects_now(state))
            if job_id is None:
                break  # every waiting project at its quota
            if held + slots_of(state["devices"].get(job_id), slots, host) > slots:
                break  # a group job waits for its slots; nothing is sent past it
            if not send(job_id):
                break  # the broker is away
            sent += 1
    return sent

"""How many jobs the fleet runs at once: its gpu slots.

Each gpu pool child of every ``embedctl worker`` records its device on the broker while it
lives (``workers/lifeline/worker_presence.py``: a key per worker, kept alive, expiring when
the worker is gone); the fleet's slots are the children recorded. ``EMBEDDING_FLEET_GPU_SLOTS``
overrides the count (a broker other than Redis, where nothing is recorded). With neither,
one slot: the embedded default's single gpu thread, or a fleet whose workers have not
started yet (a job sent then waits in the queue for the first of them).
"""

from __future__ import annotations

from core.config import get_settings


def gpu_slots() -> int:
    settings = get_settings()
    if settings.fleet_gpu_slots > 0:
        return settings.fleet_gpu_slots
    from workers.app import app
    from workers.lifeline.worker_presence import devices

    try:
        recorded = devices(app.conf.broker_url)
    except Exception:  # the broker is away: the sends will fail anyway, one slot is safe
        return 1
    return max(1, sum(len(children) for children in recorded.values()))

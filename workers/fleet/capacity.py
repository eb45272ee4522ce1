"""How many jobs the fleet runs at once: its gpu slots.

Each gpu pool child of every ``embedctl worker`` records its device on the broker while it
lives (``workers/lifeline/worker_presence.py``: a key per worker, kept alive, expiring when
the worker is gone); the fleet's slots are the children recorded. ``EMBEDDING_FLEET_GPU_SLOTS``
overrides the count (a broker other than Redis, where nothing is recorded). With neither,
one slot: the embedded default's single gpu thread, or a fleet whose workers have not
started yet (a job sent then waits in the queue for the first of them).

A data-parallel job (``n_devices`` k) holds k slots while it is in flight (:func:`slots_of`):
its worker child borrows k - 1 of its host's other children (``workers/devices.py``).
"""

from __future__ import annotations

from core.config import get_settings


def gpu_slots() -> int:
    settings = get_settings()
    if settings.fleet_gpu_slots > 0:
        return settings.fleet_gpu_slots
    return max(1, sum(_host_sizes()))


def largest_host() -> int:
    """The most gpu children one worker host has: what ``n_devices: "all"`` asks for (with
    ``EMBEDDING_FLEET_GPU_SLOTS`` and nothing recorded: the whole count, one host)."""
    sizes = _host_sizes()
    return max(sizes) if sizes else gpu_slots()


def _host_sizes() -> list[int]:
    from workers.app import app
    from workers.lifeline.worker_presence import devices

    try:
        recorded = devices(app.conf.broker_url)
    except Exception:  # the broker is away: the sends will fail anyway, one slot is safe
        return []
    return [len(children) for children in recorded.values() if children]


def slots_of(n_devices: int | str | None, slots: int, host: int | None = None) -> int:
    """The gpu slots a job with this ``n_devices`` param holds: 1 unset, k for k (``"all"``:
    ``host``, the largest host), never more than the fleet's ``slots`` (such a job is sent
    once the whole fleet is free, and its worker fails it if its host has fewer devices)."""
    if n_devices is None:
        return 1
    want = (host or slots) if n_devices == "all" else int(n_devices)
    return max(1, min(want, slots))

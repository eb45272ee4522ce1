"""The embedded mode's broker: kombu's in-process memory transport, with a stop answered at once.

Celery's consumer loop for transports without an event loop (``celery.worker.loops.synloop``,
the one the memory transport gets) waits in ``drain_events(timeout=2.0)`` and only between
two waits looks whether its worker was told to stop. So an idle embedded worker took up to
2 s to stop: ``embedctl validate`` printed its verdict ~2 s after the chord had ended
(11.65 s against 9.67 s on a Xeon with AMX, 2 cores), and every embedded API and test
paid the same on the way out. Here each wait is capped at ``WAIT_CAP_S``: an idle loop
looks at its stop flag 20 times a second, a few dict lookups each time, and a message is
still picked up within the transport's polling interval (``workers.app.EMBEDDED_POLL_S``).
Only bounded waits are capped; a caller that asks to block until a message comes still does.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import memory

WAIT_CAP_S = 0.05


class Transport(memory.Transport):
    """``memory://`` (the same in-process queues), each bounded wait at most ``WAIT_CAP_S``."""

    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:
        if timeout is not None:
            timeout = min(timeout, WAIT_CAP_S)
        return super().drain_events(connection, timeout=timeout)


__all__ = ["WAIT_CAP_S", "Transport"]

"""A worker that is still starting says so on the broker, so that a client can wait for it;
and which gpu pool child has which device (:func:`record_device`, read by ``/ready``).

CI starts ``embedctl worker`` and runs ``embedctl validate`` at once. The worker needs a few
seconds (6-7 s here, cold, for gpu + cpu + embed: ``benchmarks/RESULTS.md``) before it
answers ``inspect``: most of it importing torch and the tasks. Nothing on the broker shows
it until then, so a client cannot tell "still starting" from "no worker at all".

``embedctl worker`` therefore writes one key per queue it is about to consume, first thing
(:func:`announce`), before any heavy import: ``embedding:worker-starting:<queue>:<node>``
with a time to live (:data:`STARTING_TTL_S`). Each pool shortens its key's life to
:data:`READY_GRACE_S` once its consumer is ready (``worker_ready``): a client whose question
went out just before, or whose answer is slow on a loaded machine, still sees a worker
there and asks again. A worker that dies while starting leaves a key that expires.
:func:`starting_queues` reads them (``workers.lifeline.worker_check`` waits while one names a queue
nobody consumes yet).

Redis brokers only: other transports have no keys to read, and a client then waits only
its short first round.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "embedding:worker-starting:"
# A key outlives the slowest cold start we expect (6-7 s measured here; 2 cores shared
# with a test run: a few times that), and no more: a worker that died while starting stops
# being waited for after this long.
STARTING_TTL_S = 120
# How long a key outlives its pool's ``worker_ready``: a few rounds of questions, so that a
# reply slowed by load (seen in a full test run beside two others on 2 cores) is waited for.
READY_GRACE_S = 30
# The environment variable that hands a pool process the key its start was announced under.
KEY_ENV = "EMBEDDING_WORKER_STARTING_KEY"


def _is_redis(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("redis://", "rediss://", "unix://"))


def key_for(queue: str, node: str) -> str:
    return f"{PREFIX}{queue}:{node}"


def announce(broker_url: str | None, queues: Iterable[str], node: str) -> dict[str, str]:
    """Write a starting key for each queue; returns queue -> key (empty when the broker is
    not Redis or cannot be reached: announcing is best effort, starting is not)."""
    if not _is_redis(broker_url):
        return {}
    import redis

    keys = {queue: key_for(queue, node) for queue in queues}
    try:
        client = redis.Redis.from_url(str(broker_url), socket_timeout=2, socket_connect_timeout=2)
        try:
            with client.pipeline() as pipe:
                for queue, key in keys.items():
                    pipe.set(key, queue, ex=STARTING_TTL_S)
                pipe.execute()
        finally:
            client.close()
    except Exception as exc:  # the worker retries the broker itself; never fail its start
        log.warning("could not announce the worker's start: %s", type(exc).__name__)
        return {}
    return keys


def starting_queues(broker_url: str | None) -> set[str]:
    """The queues some worker announced it is starting to consume (keys not yet deleted or
    expired); empty for a broker that is not Redis."""
    if not _is_redis(broker_url):
        return set()
    import redis

    client = redis.Redis.from_url(str(broker_url), socket_timeout=2, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{PREFIX}*", count=100))
    finally:
        client.close()
    return {k.decode("utf-8", "replace")[len(PREFIX) :].split(":", 1)[0] for k in keys}


def clear_at_ready(sender: object = None, **_: object) -> None:
    """``worker_ready``: this pool listens now; its starting key goes after a grace."""
    key = os.environ.get(KEY_ENV)
    if not key:
        return
    from core.config import get_settings

    url = get_settings().broker_url
    if not _is_redis(url):
        return
    import redis

    try:
        client = redis.Redis.from_url(str(url), socket_timeout=2, socket_connect_timeout=2)
        try:
            client.expire(key, READY_GRACE_S)
        finally:
            client.close()
    except Exception as exc:  # it expires by itself
        log.warning("could not clear the worker's starting key: %s", type(exc).__name__)


def connect_signal() -> None:
    from celery.signals import worker_ready

    worker_ready.connect(clear_at_ready, weak=False)


# ------------------------------------------------------- which child has which device
DEVICES_PREFIX = "embedding:worker-devices:"
# A gpu pool's record lives this long unless its main process refreshes it (every third of
# it): a worker that was killed drops out of ``/ready`` within a minute and a half.
DEVICES_TTL_S = 90


def devices_key(node: str) -> str:
    return f"{DEVICES_PREFIX}{node}"


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def record_device(broker_url: str | None, node: str, assignment: dict[str, Any]) -> None:
    """A gpu pool child's assignment (index, device, pid) in its node's record, a hash of
    child index -> JSON. Best effort, like :func:`announce`."""
    if not _is_redis(broker_url):
        return
    import json

    try:
        client = _client(str(broker_url))
        try:
            key = devices_key(node)
            with client.pipeline() as pipe:
                pipe.hset(key, str(assignment["index"]), json.dumps(assignment))
                pipe.expire(key, DEVICES_TTL_S)
                pipe.execute()
        finally:
            client.close()
    except Exception as exc:
        log.warning("could not record the child's device: %s", type(exc).__name__)


def keep_devices_alive(broker_url: str | None, node: str) -> None:
    """From the gpu pool's main process once it listens: refresh the record's life while
    the process lives (a daemon thread; the record expires after a kill)."""
    if not _is_redis(broker_url):
        return
    import threading
    import time

    def refresh() -> None:
        while True:
            try:
                client = _client(str(broker_url))
                try:
                    client.expire(devices_key(node), DEVICES_TTL_S)
                finally:
                    client.close()
            except Exception as exc:  # the broker is away: the next round tries again
                log.warning("could not refresh the device record: %s", type(exc).__name__)
            time.sleep(DEVICES_TTL_S / 3)

    threading.Thread(target=refresh, name="device-record", daemon=True).start()


def devices(broker_url: str | None) -> dict[str, dict[str, dict[str, Any]]]:
    """Every gpu pool's children: node -> child index -> {index, device, pid}."""
    if not _is_redis(broker_url):
        return {}
    import json

    client = _client(str(broker_url))
    try:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for key in client.scan_iter(match=f"{DEVICES_PREFIX}*", count=100):
            node = key.decode("utf-8", "replace")[len(DEVICES_PREFIX) :]
            fields = client.hgetall(key)
            out[node] = {
                k.decode(): json.loads(v)
                for k, v in sorted(fields.items(), key=lambda kv: int(kv[0]))
            }
        return out
    finally:
        client.close()

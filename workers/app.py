"""The Celery app and its settings, from the one settings object.

Transport: Redis as broker *and* result backend in production. The validation suite is a
chord, and chords need the backend's atomic counter (Redis ``INCR``); the database
backend falls back to ``chord_unlock`` polling, which is known to loop forever when a
header task is lost. PostgreSQL stays the source of truth for jobs and figures; Celery
results are only transport. (ARCHITECTURE.md said the result backend "follows the
database"; it follows the broker instead, for that reason.)

With no ``EMBEDDING_BROKER_URL`` the same app runs on ``memory://`` with the
``cache+memory://`` backend and in-process worker threads (:func:`embedded_worker`: the
gpu queue in one, the cpu and embed queues in another): the same tasks and chords, no
services.
"""

from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from core.config import Settings, get_settings

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"
# Embedding requests: served by a threads-pool worker that batches them (see
# workers/serving/embed_batching.py); the prefork gpu worker, one task at a time and its child
# replaced every few tasks (a model reload each time), is the wrong place for them.
EMBED_QUEUE = "embed"

# Model work goes to the accelerator queue; bookkeeping to the CPU queue.
TASK_ROUTES = {
    "embedding.load_model": {"queue": GPU_QUEUE},
    "embedding.embed": {"queue": EMBED_QUEUE},
    "embedding.finetune": {"queue": GPU_QUEUE},
    "embedding.benchmark": {"queue": GPU_QUEUE},
    "embedding.compare": {"queue": GPU_QUEUE},
    "embedding.check_model_loading": {"queue": GPU_QUEUE},
    "embedding.check_inference_quality": {"queue": GPU_QUEUE},
    "embedding.check_convergence": {"queue": GPU_QUEUE},
    "embedding.run_benchmark": {"queue": GPU_QUEUE},
    "embedding.finetune_request": {"queue": CPU_QUEUE},
    "embedding.summarize_validation": {"queue": CPU_QUEUE},
    "embedding.validation_failed": {"queue": CPU_QUEUE},
    "embedding.relay_outbox": {"queue": CPU_QUEUE},
    "embedding.rescue_jobs": {"queue": CPU_QUEUE},
    "embedding.job_status": {"queue": CPU_QUEUE},
    "embedding.cancel_job": {"queue": CPU_QUEUE},
    "embedding.batch_chunk": {"queue": GPU_QUEUE},
    "embedding.worker_device": {"queue": GPU_QUEUE},
}

EMBEDDED_BROKER = "memory://"
EMBEDDED_BACKEND = "cache+memory://"
EMBEDDED_POLL_S = 0.005  # how often the in-process workers look for a message
EMBEDDED_TRANSPORT = "workers.embedded_transport:Transport"


def is_embedded(settings: Settings | None = None) -> bool:
    return not (settings or get_settings()).broker_url


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting this system relies on, in one place."""
    broker = settings.broker_url or EMBEDDED_BROKER
    backend = settings.result_backend or (settings.broker_url or EMBEDDED_BACKEND)
    # Above the fine-tune hard limit, so Redis never redelivers a job that is still running.
    visibility = settings.finetune_hard_time_limit + 600
    transport: dict[str, Any] = {"visibility_timeout": visibility}
    embedded = broker == EMBEDDED_BROKER
    if embedded:
        # The memory transport polls its queues; kombu's default, once a second, made a
        # one-text request through the embedded API wait ~0.5 s (p50 575 ms on an H200, 32
        # clients, benchmarks/gpu.py). A poll is a dict lookup in this process.
        transport["polling_interval"] = EMBEDDED_POLL_S
    return {
        "broker_url": broker,
        # memory://, stopping at once (workers/embedded_transport.py); None: the URL's own
        "broker_transport": EMBEDDED_TRANSPORT if embedded else None,
        "result_backend": backend,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        # JSON only: a pickle message is refused by the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_queues": (
            Queue(GPU_QUEUE, Exchange(GPU_QUEUE), routing_key=GPU_QUEUE),
            Queue(CPU_QUEUE, Exchange(CPU_QUEUE), routing_key=CPU_QUEUE),
            Queue(EMBED_QUEUE, Exchange(EMBED_QUEUE), routing_key=EMBED_QUEUE),
        ),
        "task_default_queue": CPU_QUEUE,
        "task_routes": TASK_ROUTES,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": 15 * 60,
        "task_time_limit": 15 * 60 + 60,
        "result_expires": 7 * 24 * 3600,
        "result_extended": True,
        "worker_hijack_root_logger": False,
        # Hand GPU memory back: a child process is replaced after this many tasks.
        "worker_max_tasks_per_child": settings.worker_max_tasks_per_child,
        "broker_connection_max_retries": None,
        # `embedctl beat`: the periodic duties (workers/lifeline/duties.py), scheduled by RedBeat,
        # whose Redis lock lets only one beat of the fleet send them.
        **beat_config(settings, broker),
    }


def configure_embed_worker(celery: Celery) -> None:
    """Settings for a worker process that serves the embed queue alone.

    No ack emulation on the broker. With it, Redis keeps each delivered message in an
    "unacked" hash until the ack, two more round trips a message, so that a message whose
    worker died is delivered again after the visibility timeout. Embed tasks ack as they
    start, so that would cover only the milliseconds between delivery and start, and it
    would come back after the visibility timeout (set above the fine-tune time limit:
    hours), long after its caller gave up. Messages a stopping worker holds unstarted are
    still put back. Measured with 32 single-text ``send_task`` clients (Xeon with AMX):
    the consumer thread spent 1.7-2.0 ms of CPU a message with it and 1.1 without, about
    5 % of all the CPU a request costs. The fine-tune queues keep it: their tasks ack late.
    """
    options = dict(celery.conf.broker_transport_options or {})
    celery.conf.broker_transport_options = {**options, "ack_emulation": False}


def beat_config(settings: Settings, broker: str) -> dict[str, Any]:
    """The duties' schedule; a duty not run within its period expires unrun, so a fleet
    whose cpu workers were away does not replay a pile of them."""

    def duty(task: str, every: float) -> dict[str, Any]:
        return {"task": task, "schedule": every, "options": {"queue": CPU_QUEUE, "expires": every}}

    loop = max(0.5, min(5.0, settings.relay_every_s, settings.rescue_every_s))
    return {
        "beat_schedule": {
            "relay-outbox": duty("embedding.relay_outbox", settings.relay_every_s),
            "rescue-jobs": duty("embedding.rescue_jobs", settings.rescue_every_s),
        },
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "beat_max_loop_interval": loop,
        "redbeat_redis_url": settings.beat_redis_url or broker,
        "redbeat_key_prefix": "embedding:redbeat:",
        # A beat that dies leaves the lock for this long; then a standby takes over.
        "redbeat_lock_timeout": max(5 * loop, 5.0),
    }


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("embedding", include=["workers.tasks", "workers.serving.batch_tasks"])
    celery.conf.update(celery_config(settings))
    return celery


app = create_app()

_publisher: Celery | None = None
_publisher_lock = threading.Lock()


def publisher() -> Celery:
    """The app that sends messages nobody in this process waits on (a fine-tune job's, a
    re-run's, a batch's chunks, an evaluation's): ``app``'s settings without a result
    backend. ``app`` itself on the memory broker, where nothing waits.

    Why: on a Redis result backend, ``send_task`` first subscribes to the task's result,
    for a ``.get()`` that a submitter never makes, and while Redis is away that subscription
    retries for some 19 s before the send fails, where the broker refuses the message in
    0.7 s. A job whose message is not sent waits in the outbox (``workers.jobs.outbox``) for
    the relay, so a submit during an outage answered after 19 s what it knew at once. The
    message is the same, so the worker still stores the task's result: ``AsyncResult(job_id)``
    follows a job as before.
    """
    global _publisher
    if is_embedded():
        return app
    with _publisher_lock:
        if _publisher is None:
            celery = Celery("embedding-publisher", set_as_current=False)
            celery.conf.update({**celery_config(get_settings()), "result_backend": None})
            _publisher = celery
        return _publisher


class _EmbeddedWorkController:
    """Built lazily: a WorkController subclass that says when its consumer is ready."""

    cls: type | None = None

    @classmethod
    def get(cls, celery: Celery) -> type:
        base = celery.WorkController

        class Controller(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.ready_event = threading.Event()
                super().__init__(*args, **kwargs)

            def on_consumer_ready(self, consumer: Any) -> None:
                self.ready_event.set()

        return Controller


# The embedded default's worker threads: the gpu queue alone (one fine-tune, benchmark or
# check at a time), and beside it the bookkeeping and embedding requests, so that a
# ``finetune_request``, ``job_status`` or ``cancel_job`` never waits behind training.
EMBEDDED_THREADS: tuple[tuple[str, ...], ...] = ((GPU_QUEUE,), (CPU_QUEUE, EMBED_QUEUE))
# ``embedctl validate``'s: the suite sends nothing to the embed queue, and with no embed pool
# beside it the gpu pool runs torch on every core (workers/pool_threads.py), as the seed's
# timing criteria assume. With the embed pool idle beside it, the gradient step of minilm ran
# on one of two cores: 95 ms against 62 (fp32, Xeon), 255 against 143 (AMD EPYC, AVX2 only),
# and it read 290 ms, over the seed's 200, in CI.
VALIDATION_THREADS: tuple[tuple[str, ...], ...] = ((GPU_QUEUE,), (CPU_QUEUE,))


@contextmanager
def embedded_worker(
    celery: Celery | None = None,
    threads: tuple[tuple[str, ...], ...] = EMBEDDED_THREADS,
):
    """Run real Celery workers in threads of this process (solo pool), for the memory broker.

    Used when no broker is configured: ``embedctl validate``, the API and the client then
    work with no services, through the same tasks and chords. One worker per entry of
    ``threads``, each consuming those queues with a hostname of its own (``gpu-<pid>@...``):
    by default the gpu queue in one thread and the cpu and embed queues in another. The
    periodic duties run beside them in one more thread (``workers.lifeline.duties``, started by
    the first worker's ``worker_init``). Yields the workers.
    """
    celery = celery or app
    # Chord bookkeeping in the worker uses the *current* app: make it ours, or Celery's
    # default app (an AMQP broker on localhost) would receive the chord's callback.
    celery.finalize()
    celery.set_current()
    celery.set_default()
    controller = _EmbeddedWorkController.get(celery)
    host = f"{os.getpid()}@{socket.gethostname()}"
    workers: list[Any] = []
    started: list[threading.Thread] = []
    try:
        # One at a time: a worker selects its queues on the app's one queue table, and its
        # consumer reads the selection when it starts; once started it keeps its own (the
        # memory transport never reconnects), and the next worker may select others.
        for queues in threads:
            worker = controller(
                app=celery,
                hostname=f"{queues[0]}-{host}",
                pool_cls="solo",
                concurrency=1,
                loglevel="WARNING",
                queues=list(queues),
                without_heartbeat=True,
                without_mingle=True,
                without_gossip=True,
            )
            workers.append(worker)
            from workers.pool_threads import in_thread

            running = [q for qs in threads for q in qs]
            thread = threading.Thread(
                target=in_thread(queues, running, worker.start),  # each pool its torch threads
                name=f"embedded-celery-{queues[0]}",
                daemon=True,
            )
            started.append(thread)
            thread.start()
            if not worker.ready_event.wait(timeout=30):
                raise RuntimeError(f"the embedded Celery worker for {queues} did not start in 30 s")
        yield workers
    finally:
        for worker in workers:
            worker.stop(in_sighandler=False)
        for thread in started:
            thread.join(timeout=10)
        # A worker marks its process as "inside a task" (joins would block); this process
        # goes on as a client, so undo that, and the tracing shortcuts the worker installed.
        from celery._state import _set_task_join_will_block
        from celery.app.trace import reset_worker_optimizations

        _set_task_join_will_block(False)
        reset_worker_optimizations(celery)


def _fresh_connections_in_child(**_: Any) -> None:
    """A forked pool child must not reuse the parent's database connections."""
    from db.session import dispose_engines

    dispose_engines(close=False)


def _warm_device_in_child(**_: Any) -> None:
    """A pool child starts its GPU (context, cuBLAS) in a thread while it waits for its
    first task, instead of inside it. Only where CUDA is present; the parent imported the
    rest before the fork (``embedctl worker``, ``embedding.inference.warmup``)."""
    if not get_settings().warm_up:
        return
    import torch

    if torch.cuda.is_available():
        from embedding.inference.warmup import warm_up

        threading.Thread(target=warm_up, name="warm-up", daemon=True).start()


from celery.signals import worker_process_init  # noqa: E402

worker_process_init.connect(_fresh_connections_in_child, weak=False)
worker_process_init.connect(_warm_device_in_child, weak=False)

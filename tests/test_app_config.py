"""The Celery settings this system relies on, as the app is really configured."""

from __future__ import annotations

import time

import pytest

from core.config import Settings
from workers.app import EMBEDDED_BACKEND, EMBEDDED_BROKER, TASK_ROUTES, celery_config, create_app


def test_production_settings():
    settings = Settings(broker_url="redis://r:6379/0", finetune_hard_time_limit=3600)
    conf = celery_config(settings)
    assert conf["broker_url"] == conf["result_backend"] == "redis://r:6379/0"  # chords need Redis
    for key in ("broker_transport_options", "result_backend_transport_options"):
        assert conf[key]["visibility_timeout"] > settings.finetune_hard_time_limit
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_track_started"] is True
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["accept_content"] == ["json"]
    assert {q.name for q in conf["task_queues"]} == {"gpu", "cpu", "embed"}
    assert conf["worker_max_tasks_per_child"] == settings.worker_max_tasks_per_child


def test_embedded_default_has_no_services():
    conf = celery_config(Settings(broker_url=None))
    assert (conf["broker_url"], conf["result_backend"]) == (EMBEDDED_BROKER, EMBEDDED_BACKEND)


def test_the_embedded_workers_look_for_messages_every_few_milliseconds():
    """kombu's memory transport polls once a second by default: a one-text request through
    the embedded API waited ~0.5 s for it (p50 575 ms on an H200). A broker pushes."""
    embedded = celery_config(Settings(broker_url=None))["broker_transport_options"]
    assert embedded["polling_interval"] <= 0.01
    redis = celery_config(Settings(broker_url="redis://r:6379/0"))["broker_transport_options"]
    assert "polling_interval" not in redis


def test_finetune_acks_late_with_time_limits_and_routes():
    app = create_app(Settings(broker_url="redis://r:6379/0"))
    import workers.tasks as tasks

    task = tasks.finetune
    assert task.acks_late and task.reject_on_worker_lost
    assert task.max_retries is None  # a duplicate held off by a live lease waits for the job
    assert task.soft_time_limit < task.time_limit
    assert TASK_ROUTES["embedding.finetune"]["queue"] == "gpu"
    assert TASK_ROUTES["embedding.summarize_validation"]["queue"] == "cpu"
    assert app.conf.task_routes == TASK_ROUTES


def test_worker_command_line():
    import argparse

    from workers.cli.worker import worker_argv

    args = argparse.Namespace(
        queues="gpu", concurrency=None, pool="prefork", loglevel="INFO", hostname=None
    )
    argv = worker_argv(args)
    assert argv[argv.index("--concurrency") + 1] == "1" and "-E" in argv


def test_embed_worker_runs_threads_that_batch():
    import argparse

    from core.config import get_settings
    from workers.cli.worker import worker_argv

    args = argparse.Namespace(
        queues="embed", concurrency=None, pool=None, loglevel="INFO", hostname=None
    )
    argv = worker_argv(args)
    assert argv[argv.index("--pool") + 1] == "threads"
    assert argv[argv.index("--concurrency") + 1] == str(get_settings().embed_worker_concurrency)
    assert TASK_ROUTES["embedding.embed"]["queue"] == "embed"


@pytest.mark.integration
def test_the_embed_worker_has_no_ack_emulation_and_keeps_its_prefetch_limit():
    """`embedctl worker --queues embed` drops the Redis "unacked" bookkeeping (two round
    trips a message, for tasks that ack as they start); the real kombu channel must take
    the option, and must still hand out no more unacknowledged messages than the prefetch.
    The app's own settings (the fine-tune workers') keep ack emulation."""
    from kombu import Exchange, Queue
    from kombu.transport import virtual

    from tests.support import redis_url
    from workers.app import configure_embed_worker

    app = create_app(Settings(broker_url=redis_url(12)))
    shared = dict(app.conf.broker_transport_options)
    assert "ack_emulation" not in shared
    configure_embed_worker(app)
    assert app.conf.broker_transport_options == {**shared, "ack_emulation": False}

    queue = Queue("embed-prefetch-check", Exchange("embed-prefetch-check"), "k")
    with app.connection_for_read() as conn:
        channel = conn.channel()
        assert channel.ack_emulation is False and channel.QoS is virtual.QoS
        producer = conn.Producer(channel)
        for n in range(3):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="k", declare=[queue])
        got = []
        with conn.Consumer(
            [queue], channel=channel, callbacks=[lambda body, m: got.append(m)]
        ) as c:
            c.qos(prefetch_count=2)
            deadline = time.monotonic() + 10
            while len(got) < 2 and time.monotonic() < deadline:
                conn.drain_events(timeout=1)
            with pytest.raises(TimeoutError):  # the third waits for an ack
                conn.drain_events(timeout=0.5)
            got[0].ack()
            conn.drain_events(timeout=5)
        assert sorted(m.payload["n"] for m in got) == [0, 1, 2]
        channel.close()

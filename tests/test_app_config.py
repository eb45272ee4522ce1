"""The Celery settings this system relies on, as the app is really configured."""

from __future__ import annotations

from embedding.config import Settings
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

    from embedding.config import get_settings
    from workers.cli.worker import worker_argv

    args = argparse.Namespace(
        queues="embed", concurrency=None, pool=None, loglevel="INFO", hostname=None
    )
    argv = worker_argv(args)
    assert argv[argv.index("--pool") + 1] == "threads"
    assert argv[argv.index("--concurrency") + 1] == str(get_settings().embed_worker_concurrency)
    assert TASK_ROUTES["embedding.embed"]["queue"] == "embed"

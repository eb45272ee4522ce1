"""``embedctl worker``, ``embedctl worker-health`` and ``embedctl flower``.

Thin wrappers over ``celery worker`` / ``celery flower`` with the settings this system
needs, so docker-compose and the tests start workers the same way.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="start a Celery worker (prefork, task events on)")
    p.add_argument("--queues", default="gpu,cpu,embed", help="comma-separated: gpu, cpu, embed")
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="default: 1 for gpu, EMBEDDING_EMBED_WORKER_CONCURRENCY for embed alone, else cores",
    )
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--hostname", default=None)
    p.add_argument(
        "--pool",
        default=None,
        choices=("prefork", "solo", "threads"),
        help="default: threads for the embed queue alone (it batches), else prefork",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("worker-health", help="exit 0 if a worker on this host answers a ping")
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=cmd_worker_health)

    p = sub.add_parser("flower", help="start Flower on the broker (basic auth required)")
    p.add_argument("--port", type=int, default=5555)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--persistent", action="store_true")
    p.add_argument("--db", default="flower.db")
    p.add_argument("--no-auth", action="store_true", help="allow Flower without basic auth")
    p.set_defaults(func=cmd_flower)


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The ``celery worker`` argv for these options (also checked by the tests).

    A worker of the ``embed`` queue alone runs the threads pool: each thread holds one
    request, and the process's batcher runs the waiting ones as one batch, so its
    concurrency (times prefetch 1) is how many requests it can batch at once. It never
    replaces a child, so it never reloads its model in the middle of serving.
    """
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = set(queues) - {"gpu", "cpu", "embed"}
    if unknown:
        raise ValueError(f"unknown queue(s) {sorted(unknown)}: use gpu, cpu and/or embed")
    embed_only = queues == ["embed"]
    if embed_only:
        from embedding.config import get_settings

        default = get_settings().embed_worker_concurrency
    else:
        default = 1 if "gpu" in queues else (os.cpu_count() or 1)
    concurrency = args.concurrency or default
    pool = args.pool or ("threads" if embed_only else "prefork")
    argv = [
        "worker",
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--loglevel",
        args.loglevel,
        "-E",  # task events, for Flower and `embedctl jobs watch`
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    return argv


def cmd_worker(args: argparse.Namespace) -> int:
    from embedding.config import get_settings, redact_url

    settings = get_settings()
    if not settings.broker_url:
        raise RuntimeError(
            "EMBEDDING_BROKER_URL is not set: a standalone worker needs a broker "
            "(without one, embedctl runs its tasks on an in-process worker)"
        )
    from workers.app import app

    argv = worker_argv(args)
    print(
        f"embedctl worker: broker {redact_url(settings.broker_url)}, {' '.join(argv)}",
        file=sys.stderr,
    )
    app.worker_main(argv)
    return 0


def cmd_worker_health(args: argparse.Namespace) -> int:
    import socket

    from workers.app import app

    replies = app.control.ping(timeout=args.timeout) or []
    host = socket.gethostname()
    mine = [r for r in replies for name in r if name.endswith("@" + host)]
    if not mine:
        print(f"no worker on {host} answered within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(f"{len(mine)} worker(s) on {host} answered")
    return 0


def cmd_flower(args: argparse.Namespace) -> int:
    auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    if not auth and not args.no_auth:
        raise RuntimeError(
            "FLOWER_BASIC_AUTH (user:password) is not set; refusing to start Flower without auth"
        )
    from workers.app import app

    argv = ["flower", f"--port={args.port}", f"--address={args.address}"]
    if auth:
        argv.append(f"--basic-auth={auth}")
    if args.persistent:
        argv += ["--persistent=True", f"--db={args.db}"]
    app.start(argv=argv)
    return 0

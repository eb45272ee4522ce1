"""``embedctl worker``, ``embedctl beat``, ``embedctl worker-health`` and ``embedctl flower``.

Thin wrappers over ``celery worker`` / ``celery beat`` / ``celery flower`` with the settings
this system needs, so docker-compose and the tests start them the same way.

``embedctl worker`` on both queues (the default) runs two Celery workers side by side: the
gpu queue with its single slot, and the cpu queue with its own pool, so bookkeeping
(``finetune_request``, the lifeline duties) never waits behind a fine-tune. This process
supervises them: it passes signals on and ends when either ends.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="start a Celery worker (prefork, task events on)")
    p.add_argument("--queues", default="gpu,cpu,embed", help="comma-separated: gpu, cpu, embed")
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="one queue: its pool's size; several: the gpu pool's (default: one per device "
        "for gpu (EMBEDDING_GPUS; 1 without GPUs), "
        "EMBEDDING_EMBED_WORKER_CONCURRENCY for embed, else cores)",
    )
    p.add_argument(
        "--cpu-concurrency",
        type=int,
        default=None,
        help="with several queues: the cpu pool's size (default: cores)",
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

    p = sub.add_parser(
        "beat", help="run the periodic duties (outbox relay, job rescue): one per fleet, locked"
    )
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_beat)

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


QUEUES = ("gpu", "cpu", "embed")


def _queues(args: argparse.Namespace) -> list[str]:
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = set(queues) - set(QUEUES)
    if unknown:
        raise ValueError(f"unknown queue(s) {sorted(unknown)}: use gpu, cpu and/or embed")
    return queues


def pool_for(
    queue: str, concurrency: int | None, pool: str | None, devices: list[str] | None = None
) -> tuple[int, str]:
    """Each queue's pool: gpu one slot per device (``EMBEDDING_GPUS``; one on a host
    without GPUs), each child pinned to its own (prefork: a child hands its GPU memory back
    when it is replaced; ``workers.devices``), cpu one per core, embed the threads pool.
    An embed thread holds one request and the process's batcher runs the waiting ones as one batch, so its
    concurrency (times prefetch 1) is how many requests it can batch at once; it never
    replaces a child, so it never reloads its model in the middle of serving."""
    if queue == "embed":
        from core.config import get_settings

        return concurrency or get_settings().embed_worker_concurrency, pool or "threads"
    if queue == "gpu":
        return concurrency or max(1, len(devices or ())), pool or "prefork"
    return concurrency or (os.cpu_count() or 1), pool or "prefork"


def worker_argv(args: argparse.Namespace, devices: list[str] | None = None) -> list[str]:
    """The ``celery worker`` argv of a worker serving these queues as one pool (also checked
    by the tests); the pool's kind and size follow the first queue (and for gpu, the
    host's ``devices``)."""
    queues = _queues(args)
    concurrency, pool = pool_for(queues[0], args.concurrency, args.pool, devices)
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


def pool_argvs(args: argparse.Namespace) -> list[list[str]]:
    """With several queues, one single-queue ``embedctl worker`` per queue, so bookkeeping
    (cpu) and batched embeddings (embed) never wait behind a fine-tune (gpu). Node names are
    ``NAME-QUEUE@HOST``; the gpu pool takes ``--concurrency``, the cpu one
    ``--cpu-concurrency``, and each pool's kind and other defaults are :func:`pool_for`'s."""
    name, _, host = (args.hostname or "celery@%h").partition("@")
    sizes = {"gpu": args.concurrency, "cpu": args.cpu_concurrency, "embed": None}
    argvs = []
    for queue in _queues(args):
        argv = ["worker", "--queues", queue, "--loglevel", args.loglevel]
        argv += ["--hostname", f"{name}-{queue}@{host or '%h'}"]
        if sizes[queue]:
            argv += ["--concurrency", str(sizes[queue])]
        if args.pool and queue != "embed":  # the embed pool batches on threads, always
            argv += ["--pool", args.pool]
        argvs.append(argv)
    return argvs


def cmd_worker(args: argparse.Namespace) -> int:
    from core.config import get_settings, redact_url

    settings = get_settings()
    if not settings.broker_url:
        raise RuntimeError(
            "EMBEDDING_BROKER_URL is not set: a standalone worker needs a broker "
            "(without one, embedctl runs its tasks on an in-process worker)"
        )
    from workers.lifeline import worker_presence

    queues = _queues(args)
    node = f"{args.hostname or 'celery@%h'}:{os.getpid()}".replace("%h", socket.gethostname())
    if len(queues) > 1:
        # First thing, before any pool imports torch: "a worker is starting" on the broker.
        keys = worker_presence.announce(settings.broker_url, queues, node)
        commands = [[sys.executable, "-m", "workers.cli", *a] for a in pool_argvs(args)]
        envs = [_pool_env(keys.get(q), queues) for q in queues]
        return supervise(commands, envs)
    if worker_presence.KEY_ENV not in os.environ:
        keys = worker_presence.announce(settings.broker_url, queues, node)
        if keys:
            os.environ[worker_presence.KEY_ENV] = keys[queues[0]]
    worker_presence.connect_signal()
    devices = _gpu_pool_devices(args, queues, settings)  # before anything touches CUDA
    from workers.app import EMBED_QUEUE, GPU_QUEUE, app, configure_embed_worker
    from workers.pool_threads import configure_process

    kind = pool_for(queues[0], args.concurrency, args.pool, devices)[1]
    configure_process(queues, kind)  # this pool's torch threads, where its tasks run

    if _queues(args) == [EMBED_QUEUE]:
        configure_embed_worker(app)
    # First-use imports now, not in the first request (a prefork child inherits them; the
    # device is touched in each child, after the fork: CUDA does not survive one). Only the
    # pools that load models: the cpu pool's bookkeeping would only start later for it.
    if settings.warm_up and set(queues) & {GPU_QUEUE, EMBED_QUEUE}:
        from embedding.inference.warmup import warm_up

        spent = warm_up(device="cpu")
        print(
            "embedctl worker: warmed up "
            + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in spent.items()),
            file=sys.stderr,
        )
    argv = worker_argv(args, devices)
    print(
        f"embedctl worker: broker {redact_url(settings.broker_url)}, {' '.join(argv)}",
        file=sys.stderr,
    )
    app.worker_main(argv)
    return 0


def _gpu_pool_devices(
    args: argparse.Namespace, queues: list[str], settings: Any
) -> list[str] | None:
    """The gpu pool's devices (``EMBEDDING_GPUS``): each child is pinned to its own as it
    forks (``workers.devices``), and the plan is printed. None for other pools."""
    if queues != ["gpu"]:
        return None
    from workers import devices as gpu_devices

    found = gpu_devices.resolve_devices(settings.gpus)
    size, kind = pool_for("gpu", args.concurrency, args.pool, found)
    name = (args.hostname or "celery@%h").replace("%h", socket.gethostname())
    if kind == "prefork":
        gpu_devices.connect_pool(found, name, settings.broker_url)
    plan = ", ".join(f"child {i}: {gpu_devices.device_for(i, found)}" for i in range(size))
    print(f"embedctl worker: gpu pool of {size} ({plan})", file=sys.stderr)
    return found


def _pool_env(starting_key: str | None, pools: list[str]) -> dict[str, str]:
    """A pool's environment: ours, the pools running beside it (each splits the cores by
    them: ``embedding.inference.torch_threads``), and the key its start was announced under (the pool
    lets it expire once it listens: ``workers.lifeline.worker_presence``)."""
    from embedding.inference.torch_threads import POOLS_ENV
    from workers.lifeline.worker_presence import KEY_ENV

    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env[POOLS_ENV] = ",".join(pools)
    return {**env, KEY_ENV: starting_key} if starting_key else env


def supervise(commands: list[list[str]], envs: list[dict[str, str]] | None = None) -> int:
    """Run the pools; pass SIGTERM/SIGINT/SIGQUIT on; when one ends, stop the other (a
    half-alive worker would look healthy to its container while a queue goes unserved)."""
    envs = envs or [dict(os.environ) for _ in commands]
    procs = [subprocess.Popen(cmd, env=env) for cmd, env in zip(commands, envs, strict=True)]

    def forward(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, forward)
    while all(proc.poll() is None for proc in procs):
        time.sleep(0.5)
    forward(signal.SIGTERM, None)
    codes = [proc.wait() for proc in procs]
    return next((code for code in codes if code), 0)


def cmd_beat(args: argparse.Namespace) -> int:
    from core.config import get_settings, redact_url

    settings = get_settings()
    if not (settings.broker_url or "").startswith(("redis://", "rediss://")):
        raise RuntimeError(
            "embedctl beat needs a Redis broker (EMBEDDING_BROKER_URL): its lock lives there. "
            "Without a broker the embedded default runs the duties in process."
        )
    from redis.exceptions import RedisError

    from workers.app import app

    print(f"embedctl beat: broker {redact_url(settings.broker_url)}", file=sys.stderr)
    # A Redis outage (or a lost lock) must not end the fleet's scheduler: start it again,
    # and it waits for the lock like any standby.
    while True:
        try:
            app.start(argv=["beat", "--loglevel", args.loglevel])
            return 0
        except RedisError as exc:
            print(f"embedctl beat: {type(exc).__name__} ({exc}); again in 1 s", file=sys.stderr)
            time.sleep(1.0)


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

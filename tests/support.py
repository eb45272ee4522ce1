"""Real servers and processes for the integration tests.

Each test that needs PostgreSQL gets its own database (created and dropped here, never the
shared ``test``/``postgres`` ones); Redis tests use a numbered database of the local server,
flushed first; a Celery worker is a real ``embedctl worker`` subprocess.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "EMBEDDING_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST = "127.0.0.1"
ALL_QUEUES = "gpu,cpu,embed"  # as `embedctl worker` consumes by default
# A second checkout running its tests beside this one points them at its own redis-server.
REDIS_PORT = int(os.environ.get("EMBEDDING_TEST_REDIS_PORT", "6379"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_database(prefix: str = "emb_it") -> Iterator[str]:
    """A fresh PostgreSQL database; yields its SQLAlchemy URL and drops it afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def redis_url(db: int) -> str:
    """A flushed numbered database of the local Redis."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def service_env(
    database_url: str, broker_url: str | None, artifacts: Path, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDING_")}
    env.update(
        {
            "EMBEDDING_DATABASE_URL": database_url,
            "EMBEDDING_ARTIFACTS_DIR": str(artifacts),
            "EMBEDDING_MODEL_ROOTS": f'["{artifacts}"]',
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    if broker_url:
        env["EMBEDDING_BROKER_URL"] = broker_url
        env["EMBEDDING_RESULT_BACKEND"] = broker_url
    env.update(extra)
    return env


@contextlib.contextmanager
def celery_worker(
    env: dict[str, str],
    log_path: Path,
    queues: str = "gpu,cpu",
    name: str | None = None,
    ready_timeout: float = 60.0,
    concurrency: int | None = 1,
) -> Iterator[subprocess.Popen]:
    """A real ``embedctl worker`` subprocess; waits until it answers a ping.

    By default the gpu and cpu queues (a pool each); tests that embed through the worker
    add ``embed`` (its own pool of threads), the others save its start.

    ``concurrency=None`` leaves it to ``embedctl worker`` (the embed queue's threads).
    """
    proc, log = spawn_worker(env, log_path, queues, name, concurrency)
    try:
        # Several queues: `embedctl worker` runs one pool per queue, each says "ready.".
        pools = len(set(queues.split(",")))
        wait_for_worker(env, proc, log_path, ready_timeout, pools=pools)
        yield proc
    finally:
        stop_process(proc)
        log.close()


def spawn_worker(
    env: dict[str, str],
    log_path: Path,
    queues: str = "gpu,cpu",
    name: str | None = None,
    concurrency: int | None = 1,
) -> tuple[subprocess.Popen, Any]:
    """Start an ``embedctl worker`` in a session of its own and return at once (with its
    open log): for a test that lets it start while something else runs."""
    hostname = name or f"it-{uuid.uuid4().hex[:6]}@%h"
    log = log_path.open("wb")
    threads = [] if concurrency is None else ["--concurrency", str(concurrency)]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "worker",
            "--queues",
            queues,
            *threads,
            "--loglevel",
            "INFO",
            "--hostname",
            hostname,
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, log


def wait_for_worker(
    env: dict[str, str], proc: subprocess.Popen, log_path: Path, timeout: float, pools: int = 1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"worker exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        if log_path.read_bytes().count(b"ready.") >= pools:
            return
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready in {timeout} s:\n{log_path.read_text()[-3000:]}")


def pool_processes(worker: subprocess.Popen, queue: str = "gpu") -> list[int]:
    """The pool processes (where tasks run) of the Celery worker serving ``queue`` under an
    ``embedctl worker`` process: its children, or its grandchildren when it runs several pools."""

    def children(pid: int) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def argv(pid: int) -> list[bytes]:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return []

    def serves(pid: int) -> bool:  # a pool's worker: its own command line (a fork shares it)
        args = argv(pid)
        return (
            args != argv(worker.pid)
            and b"--queues" in args
            and args[args.index(b"--queues") + 1] == queue.encode()
        )

    mains = [pid for pid in children(worker.pid) if serves(pid)]
    if not mains:
        return children(worker.pid)  # a single pool: its children are the pool
    return [child for main in mains for child in children(main)]


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextlib.contextmanager
def api_server(env: dict[str, str], log_path: Path, ready_timeout: float = 120.0) -> Iterator[str]:
    """A real ``embedctl serve`` subprocess on a free loopback port; yields its base URL."""
    import urllib.request

    port = free_port()
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"api exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"api not up in {ready_timeout} s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        stop_process(proc)
        log.close()

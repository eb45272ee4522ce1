"""Servers a reliability test may stop, kill and restart: its own, never the shared ones.

The shared PostgreSQL (5432) and Redis (6379) serve every other test, so an outage test that
stopped them would break its neighbours. Each class here runs a private server in a temporary
folder on a spare 127.0.0.1 port, keeps that port and folder across restarts (so clients can
reconnect to the same URL and find their data), and removes everything on exit, even when the
test fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

SHARED_PORTS = frozenset({5432, 6379})
LOG_TAIL_CHARS = 3000


def free_port() -> int:
    """A port nobody listens on now (the OS picks it), never one of the shared servers'."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in SHARED_PORTS:
            return port


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The end of a server log, for error messages: why it did not start is usually there."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``check`` until it returns true or ``timeout`` seconds pass; True if it did."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class RedisServer:
    """Its own ``redis-server``: AOF with ``appendfsync always``, no RDB, no eviction.

    ``appendfsync always`` means every acknowledged write is on disk, so data survives both a
    clean ``stop()`` and a ``kill()`` (SIGKILL) — the property broker-outage tests rely on.
    """

    START_TIMEOUT_S = 10.0

    def __init__(self, password: str | None = None, port: int | None = None) -> None:
        if port in SHARED_PORTS:
            raise ValueError(f"port {port} belongs to a shared server")
        self.password = password
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="emb-redis-"))
        self.log_path = self.root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server (clean if possible) and delete its folder."""
        try:
            self.stop()
        except RuntimeError:
            pass  # cleanup must not fail the test a second time; the SIGKILL below ends it
        finally:
            self.kill()
            shutil.rmtree(self.root, ignore_errors=True)

    def _command(self) -> list[str]:
        cmd = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.root),
            "--logfile", str(self.log_path),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd

    def start(self) -> None:
        """Start on the same port and folder as before; return once it answers PING."""
        if self.running:
            return
        # Its own session: Ctrl-C in pytest must not kill it before we shut it down cleanly.
        self.proc = subprocess.Popen(
            self._command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        proc = self.proc
        if not _wait_until(lambda: proc.poll() is not None or self.ping(), self.START_TIMEOUT_S):
            self.kill()
            raise RuntimeError(
                f"redis-server on port {self.port} did not answer PING within "
                f"{self.START_TIMEOUT_S:.0f} s; log tail:\n{log_tail(self.log_path)}"
            )
        if proc.poll() is not None:
            self.proc = None
            raise RuntimeError(
                f"redis-server on port {self.port} exited with code {proc.returncode}; "
                f"log tail:\n{log_tail(self.log_path)}"
            )

    def stop(self, timeout: float = 10) -> None:
        """A clean SHUTDOWN: Redis fsyncs the AOF and exits, so the file is complete."""
        if not self.running:
            self.proc = None
            return
        assert self.proc is not None
        try:
            self._client().shutdown()
        except Exception:
            self.proc.terminate()  # SIGTERM is Redis's other clean shutdown path
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(
                f"redis-server on port {self.port} did not shut down within {timeout} s"
            ) from None
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush anything that was not already on disk."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def restart(self, down_for: float = 0) -> None:
        """Clean stop, ``down_for`` seconds of outage, start again on the same port and data."""
        self.stop()
        time.sleep(down_for)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def _client(self) -> redis.Redis:
        """A client that fails at once: redis-py's default retries with backoff would turn each
        PING of a server that is not up yet (and the SHUTDOWN reply that never comes) into
        seconds of waiting. (Imported here so this module loads without redis installed.)"""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )

    def ping(self) -> bool:
        """True when the server answers PING (not while it is still loading the AOF)."""
        client = self._client()
        try:
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()


def _pg_bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian puts them under a versioned dir)."""
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if not versions:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    return max(versions, key=lambda p: float(p.parent.name))


class PostgresCluster:
    """Its own cluster (``initdb`` + ``pg_ctl``) in a temporary folder, 127.0.0.1 only.

    ``initdb`` and ``postgres`` refuse to run as root, so as root every server command runs as
    the ``postgres`` OS user via ``runuser -u postgres --`` (or ``su postgres -c`` where there
    is no runuser), and that user owns the folder. The unix socket goes into the folder too, so
    it never collides with the shared server's in /var/run/postgresql. ``fsync=off`` is safe
    here: a clean or fast stop still writes everything out; only an OS crash would lose data.
    """

    START_TIMEOUT_S = 30

    def __init__(self, port: int | None = None) -> None:
        if port in SHARED_PORTS:
            raise ValueError(f"port {port} belongs to a shared server")
        self.bin = _pg_bin()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="emb-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def __enter__(self) -> PostgresCluster:
        try:
            self.init()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server (immediately: its data is about to be deleted) and delete the folder."""
        try:
            self.stop(mode="immediate")
        except RuntimeError:
            pass  # cleanup must not fail the test a second time; the SIGKILL below ends it
        finally:
            self._kill_postmaster()
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run one of the PostgreSQL binaries, as the postgres user when we are root."""
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            if shutil.which("runuser"):
                cmd = ["runuser", "-u", "postgres", "--", *cmd]
            else:
                cmd = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)]
        # cwd: the postgres user cannot enter /root, and initdb complains if it cannot.
        return subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )

    def init(self) -> None:
        """``initdb`` with trust auth for the ``postgres`` superuser: a throwaway cluster."""
        out = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed (code {out.returncode}):\n{out.stderr[-2000:]}")

    def start(self) -> None:
        """Start on the same port and data; return once it accepts connections."""
        if self._postmaster_pid() is not None and self.is_up():
            return
        options = shlex.join(
            [
                "-p", str(self.port),
                "-k", str(self.root),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off",
            ]
        )  # fmt: skip
        out = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options,
            "-w", "-t", str(self.START_TIMEOUT_S), "start",
            timeout=self.START_TIMEOUT_S + 10,
        )  # fmt: skip
        # pg_ctl -w waits for the postmaster to say "ready"; pg_isready checks TCP really works.
        if out.returncode != 0 or not _wait_until(self.is_up, self.START_TIMEOUT_S, 0.1):
            raise RuntimeError(
                f"PostgreSQL on port {self.port} did not accept connections within "
                f"{self.START_TIMEOUT_S} s (pg_ctl: {out.stderr.strip() or out.returncode}); "
                f"log tail:\n{log_tail(self.log_path)}"
            )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop``: 'smart' waits for clients, 'fast' disconnects them and checkpoints,
        'immediate' is a crash (recovery replays the WAL on the next start)."""
        if self._postmaster_pid() is None:
            return  # not running (or killed, leaving a stale pid file the next start ignores)
        out = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        if out.returncode != 0 and self._postmaster_pid() is not None:
            raise RuntimeError(
                f"pg_ctl stop -m {mode} failed: {out.stderr.strip()}\n{log_tail(self.log_path)}"
            )

    def _postmaster_pid(self) -> int | None:
        """The live postmaster's pid, read from its pid file, or None.

        pg_ctl trusts the pid file, but a killed postmaster leaves it behind (and pg_ctl stop
        then waits in vain for it to go), and its number may be reused by an unrelated process.
        So the pid counts only while /proc says it is a postgres on *our* data dir (a zombie
        has an empty cmdline)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.data).encode() in cmdline else None

    def _kill_postmaster(self) -> None:
        """Last resort on close: SIGKILL a postmaster that ``pg_ctl stop`` did not end."""
        pid = self._postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def restart(self, down_for: float = 0) -> None:
        """Fast stop, ``down_for`` seconds of outage, start again on the same port and data."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def wait_down(self, timeout: float = 10) -> None:
        """Wait until the port no longer answers (``stop()`` already waits; this is for others)."""
        _wait_until(lambda: not self.is_up(), timeout, 0.1)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def is_up(self) -> bool:
        """True when the server accepts connections over TCP on its port."""
        out = subprocess.run(
            [
                str(self.bin / "pg_isready"),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
            ],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return out.returncode == 0

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name``; returns its URL. (CREATE DATABASE cannot run in a
        transaction, hence autocommit.)"""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

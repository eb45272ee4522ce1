"""docker-compose.yml, checked by parsing (no Docker engine here) and by running every
command in it the way the compose services would."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support import (
    ROOT,
    free_port,
    postgres_database,
    redis_url,
    service_env,
    spawn_worker,
    stop_process,
    wait_for_worker,
)

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _command(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    return cmd if isinstance(cmd, list) else shlex.split(cmd)


def test_the_services_are_all_there():
    assert set(SERVICES) == {
        "redis",
        "redis-results",
        "postgres",
        "migrate",
        "beat",
        "worker-gpu",
        "worker-embed",
        "worker-cpu",
        "cache",
        "flower",
        "api",
    }


def test_redis_keeps_jobs_across_restarts():
    cmd = _command("redis")
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--requirepass" in cmd


def test_results_live_apart_from_the_broker_with_their_own_policy():
    env = COMPOSE["x-embedding-env"]
    assert "@redis:" in env["EMBEDDING_BROKER_URL"]
    assert "@redis-results:" in env["EMBEDDING_RESULT_BACKEND"]
    cmd = _command("redis-results")
    assert cmd[cmd.index("--maxmemory-policy") + 1] != "noeviction"


def test_beat_runs_the_duties():
    assert _command("beat") == ["embedctl", "beat"]


def test_gpu_worker_reserves_a_gpu_and_runs_one_task_at_a_time():
    service = SERVICES["worker-gpu"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    cmd = _command("worker-gpu")
    assert cmd[cmd.index("--queues") + 1] == "gpu" and cmd[cmd.index("--concurrency") + 1] == "1"
    for name in ("worker-gpu", "worker-cpu"):
        assert SERVICES[name]["healthcheck"]["test"][1:] == ["embedctl", "worker-health"]


def test_flower_requires_auth_and_is_not_published_beyond_loopback():
    flower = SERVICES["flower"]
    assert "FLOWER_BASIC_AUTH" in flower["environment"]
    assert "?" in flower["environment"]["FLOWER_BASIC_AUTH"]  # compose refuses to start without it
    for port in flower["ports"]:
        assert str(port).startswith("127.0.0.1:"), port
    assert "--persistent" in _command("flower")


def test_secrets_come_from_the_environment():
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in (
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "FLOWER_BASIC_AUTH",
        "EMBEDDING_API_KEYS",
    ):
        assert f"${{{secret}:?" in text
    assert "migrate" in SERVICES and SERVICES["migrate"]["restart"] == "no"


# ------------------------------------------------------------------ the commands, run
@pytest.mark.integration
@pytest.mark.slow
def test_every_compose_command_runs(tmp_path):
    """Run each service's command as compose would, against local servers."""
    seen: set[str] = set()

    # the three redis services: the exact command lines, on spare ports.
    for service in ("redis", "redis-results", "cache"):
        port = free_port()
        redis_cmd = [
            c.replace("${REDIS_PASSWORD:?set REDIS_PASSWORD}", "pw") for c in _command(service)
        ]
        redis = subprocess.Popen(
            [*redis_cmd, "--port", str(port), "--dir", str(tmp_path), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            for _ in range(50):
                ping = subprocess.run(
                    ["redis-cli", "-p", str(port), "-a", "pw", "ping"],
                    capture_output=True,
                    text=True,
                )
                if "PONG" in ping.stdout:
                    break
                time.sleep(0.1)
            assert "PONG" in ping.stdout
            seen.add(service)
        finally:
            stop_process(redis)

    with postgres_database("emb_compose") as db_url:
        # postgres's healthcheck command.
        assert subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0
        seen.add("postgres")
        broker = redis_url(13)
        env = service_env(db_url, broker, tmp_path)
        # migrate
        out = subprocess.run(
            [sys.executable, "-m", "workers.cli", *_command("migrate")[1:]],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0 and "revision" in out.stdout, out.stderr
        seen.add("migrate")
        # the workers, started together (each start is mostly imports and the warm-up, so
        # three at once take little longer than one), then their healthcheck from the same
        # host, which must count all three.
        workers = ["worker-cpu", "worker-gpu", "worker-embed"]
        with contextlib.ExitStack() as stack:
            started = []
            for service in workers:
                args = _command(service)[1:]
                assert args[0] == "worker"
                queues = args[args.index("--queues") + 1]
                log_path = tmp_path / f"{service}.log"
                proc, log = spawn_worker(
                    env,
                    log_path,
                    queues=queues,
                    name=f"{service}@%h",
                    concurrency=None if "--concurrency" not in args else 1,
                )
                stack.callback(log.close)
                stack.callback(stop_process, proc)
                started.append((proc, log_path, len(set(queues.split(",")))))
            for proc, log_path, pools in started:
                wait_for_worker(env, proc, log_path, 120, pools=pools)
            health = subprocess.run(
                [sys.executable, "-m", "workers.cli", "worker-health"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert health.returncode == 0, health.stderr
            assert f"{len(workers)} worker(s) on" in health.stdout, health.stdout
            seen.update(workers)
        # beat: up, holding the fleet's lock, sending its duties
        beat_log = tmp_path / "beat.log"
        with beat_log.open("wb") as out:
            beat = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", *_command("beat")[1:]],
                env={**env, "EMBEDDING_RELAY_EVERY_S": "0.5"},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and b"embedding.relay_outbox" not in (
                    beat_log.read_bytes()
                ):
                    assert beat.poll() is None, beat_log.read_text()[-3000:]
                    time.sleep(0.2)
                assert b"embedding.relay_outbox" in beat_log.read_bytes(), beat_log.read_text()
                seen.add("beat")
            finally:
                stop_process(beat)
        # flower: the exact arguments, with its auth variable set
        args = _command("flower")[1:]
        args[args.index("--port") + 1] = str(free_port())
        args[args.index("--db") + 1] = str(tmp_path / "flower.db")
        flower_port = args[args.index("--port") + 1]
        flower = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            env={**env, "FLOWER_BASIC_AUTH": "a:b"},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = None
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{flower_port}/api/workers", timeout=2)
                    code = 200
                except urllib.error.HTTPError as exc:
                    code = exc.code
                    break
                except OSError:
                    time.sleep(0.2)
            assert code == 401  # up, and refusing a request without auth
            seen.add("flower")
        finally:
            stop_process(flower)
        _run_api_service(env, tmp_path)
        seen.add("api")
        refused = subprocess.run(
            [sys.executable, "-m", "workers.cli", *_command("flower")[1:]],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0 and "FLOWER_BASIC_AUTH" in refused.stderr
    assert seen == set(SERVICES)


def _run_api_service(env: dict[str, str], tmp_path: Path) -> None:
    """The api service's exact arguments (port swapped for a free one), with its keys; then
    its healthcheck's URL; and without keys the same command must refuse to start."""
    args = _command("api")[1:]
    port = str(free_port())
    args[args.index("--port") + 1] = port
    without_keys = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert without_keys.returncode != 0 and "EMBEDDING_API_KEYS" in without_keys.stderr
    api = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *args],
        env={**env, "EMBEDDING_API_KEYS": "k1"},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        health = SERVICES["api"]["healthcheck"]["test"]
        probe = health[health.index("-c") + 1].replace("8000", port)
        code = 1
        for _ in range(150):
            code = subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode
            if code == 0:
                break
            time.sleep(0.2)
        assert code == 0  # /ready: database and broker reachable
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401  # up, and refusing a request without a key
    finally:
        stop_process(api)


def test_dockerfile_installs_what_compose_runs():
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in text and "pip install" in text
    assert Path(ROOT / "alembic.ini").is_file()


def test_the_cache_is_its_own_evicting_redis_never_the_brokers():
    cmd = _command("cache")
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "allkeys-lru" and "--maxmemory" in cmd
    env = COMPOSE["x-embedding-env"]
    assert "@cache:" in env["EMBEDDING_CACHE_URL"] and "@redis:" in env["EMBEDDING_BROKER_URL"]

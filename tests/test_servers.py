"""The restartable test servers keep their promises: data survives stop/start and SIGKILL,
a password is enforced, and a stopped server really refuses connections.

Outage tests built on these helpers are only meaningful if these hold, so they are checked
here on their own, quickly, without workers or models.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.pool import NullPool

from tests.servers import SHARED_PORTS, PostgresCluster, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


# ---------------------------------------------------------------- Redis


def test_redis_keys_survive_a_clean_restart() -> None:
    with RedisServer() as server:
        assert server.port not in SHARED_PORTS
        client = redis.Redis.from_url(server.url(3))
        client.mset({f"k{i}": i for i in range(100)})
        client.close()

        server.stop()
        assert not server.ping()
        server.start()

        client = redis.Redis.from_url(server.url(3))
        assert client.mget([f"k{i}" for i in range(100)]) == [str(i).encode() for i in range(100)]
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()


def test_redis_list_survives_sigkill() -> None:
    """appendfsync always: every acknowledged write is on disk before the reply."""
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url())
        client.rpush("queue", *[f"job-{i}" for i in range(50)])
        client.close()

        server.kill()
        assert not server.ping()
        server.restart(down_for=0.2)  # restart after a kill is just a start

        client = redis.Redis.from_url(server.url())
        assert client.lrange("queue", 0, -1) == [f"job-{i}".encode() for i in range(50)]
        client.close()


def test_redis_password_is_required() -> None:
    with RedisServer(password="s3cret") as server:
        assert server.url(2) == f"redis://:s3cret@127.0.0.1:{server.port}/2"
        assert server.ping()
        with redis.Redis.from_url(server.url(2)) as client:
            assert client.set("a", "1")

        # No retries: redis-py would otherwise back off and retry for seconds before failing.
        with (
            redis.Redis(
                host="127.0.0.1", port=server.port, retry=Retry(NoBackoff(), 0)
            ) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.get("a")

        server.restart()  # the clean stop must authenticate too
        with redis.Redis.from_url(server.url(2)) as client:
            assert client.get("a") == b"1"


def test_redis_start_failure_says_why() -> None:
    """A port already taken: start() fails at once, with the server's own explanation."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = RedisServer(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match=r"(?s)exited.*log tail.*in use"), server:
            pass
        assert not server.root.exists(), "a failed start must not leave its folder behind"


def test_redis_refuses_shared_port() -> None:
    with pytest.raises(ValueError):
        RedisServer(port=6379)


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    with PostgresCluster() as c:
        yield c
    assert not c.root.exists()


def _engine(url: str) -> sa.Engine:
    """No pool: every connect really goes to the server, as a client after an outage would."""
    return sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})


def test_postgres_row_survives_stop_and_start(cluster: PostgresCluster) -> None:
    assert cluster.port not in SHARED_PORTS
    url = cluster.create_database("outage_check")
    assert url == f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/outage_check"
    engine = _engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id int PRIMARY KEY, note text)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1, 'before the outage')"))

    cluster.stop()
    assert not cluster.is_up()
    with pytest.raises(sa.exc.OperationalError), engine.connect():
        pass

    cluster.start()
    assert cluster.is_up()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT note FROM t WHERE id = 1")).scalar_one() == (
            "before the outage"
        )
    engine.dispose()


def test_postgres_restart_with_downtime(cluster: PostgresCluster) -> None:
    engine = _engine(cluster.url())
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar_one()
        settings = dict(
            conn.execute(
                sa.text(
                    "SELECT name, setting FROM pg_settings"
                    " WHERE name IN ('fsync', 'listen_addresses', 'port')"
                )
            ).all()
        )
    assert settings == {"fsync": "off", "listen_addresses": "127.0.0.1", "port": str(cluster.port)}

    started = time.monotonic()
    cluster.restart(down_for=2)
    assert time.monotonic() - started >= 2
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar_one()
    assert after > before, "it should be a new postmaster on the same port"
    engine.dispose()


def test_postgres_cleans_up_when_the_test_fails() -> None:
    with pytest.raises(ZeroDivisionError), PostgresCluster() as c:
        assert c.is_up()
        1 / 0  # noqa: B018
    assert not c.root.exists()
    assert not c.is_up()

"""One job per GPU: the gpu pool has a child per device, each pinned to its own for life
(workers/devices.py). A CPU host is told it has devices ``cpu:0..cpu:3`` to prove it."""

from __future__ import annotations

import os
import time

import pytest

from workers import devices as gpu_devices
from workers.cli.worker import pool_for


def test_the_setting_names_the_devices():
    resolve = gpu_devices.resolve_devices
    assert resolve("0,1, 3", {}) == ["cuda:0", "cuda:1", "cuda:3"]
    assert resolve("cpu:0,cpu:1", {}) == ["cpu:0", "cpu:1"]
    # unset: CUDA_VISIBLE_DEVICES, else the driver's count
    assert resolve("", {"CUDA_VISIBLE_DEVICES": "2,5"}) == ["cuda:2", "cuda:5"]
    assert resolve("", {"CUDA_VISIBLE_DEVICES": ""}) == []
    assert resolve("", {}, count=lambda: 2) == ["cuda:0", "cuda:1"]
    assert resolve("", {}, count=lambda: 0) == []  # a CPU host: nothing changes
    with pytest.raises(ValueError, match="mixes"):
        resolve("0,cpu:1", {})
    with pytest.raises(ValueError, match="twice"):
        resolve("1,1", {})


def test_the_gpu_pool_has_a_child_per_device():
    assert pool_for("gpu", None, None, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]) == (4, "prefork")
    assert pool_for("gpu", None, None, []) == (1, "prefork")  # CPU host: as before
    assert pool_for("gpu", None, None, None) == (1, "prefork")
    assert pool_for("gpu", 2, None, ["cuda:0", "cuda:1", "cuda:2"]) == (2, "prefork")


def test_a_child_is_pinned_by_its_index(monkeypatch):
    monkeypatch.delenv(gpu_devices.DEVICE_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    devices = ["cuda:4", "cuda:7"]
    assert [gpu_devices.device_for(i, devices) for i in range(3)] == ["cuda:4", "cuda:7", "cuda:4"]
    assignment = gpu_devices.pin_child(1, devices)
    assert assignment.device == "cuda:7"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"  # in the child, `cuda` is its GPU
    assert gpu_devices.pin_child(0, ["cpu:0"]).device == "cpu:0"
    assert gpu_devices.device_for(0, []) == "cpu"


def test_a_group_takes_its_own_device_first():
    host = ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert gpu_devices.group_devices(2, "cuda:2", host) == ["cuda:2", "cuda:0"]
    assert gpu_devices.group_devices("all", "cuda:1", host) == [
        "cuda:1",
        "cuda:0",
        "cuda:2",
        "cuda:3",
    ]
    with pytest.raises(gpu_devices.NotEnoughDevices, match="has 4"):
        gpu_devices.group_devices(5, "cuda:0", host)
    assert gpu_devices.rank_devices(["cuda:2", "cuda:0"]) == (
        ["cuda:0", "cuda:1"],
        {"CUDA_VISIBLE_DEVICES": "2,0"},
    )
    assert gpu_devices.rank_devices(["cpu:1", "cpu:0"]) == (["cpu", "cpu"], {})


@pytest.mark.slow
def test_a_worker_told_it_has_four_devices_pins_four_children(tmp_path, monkeypatch):
    from celery import Celery

    from core.config import get_settings
    from tests.servers import RedisServer
    from tests.support import celery_worker, service_env

    with RedisServer() as redis_server:
        broker = redis_server.url(0)
        env = service_env(
            f"sqlite:///{tmp_path / 'db.sqlite'}",
            broker,
            tmp_path,
            EMBEDDING_GPUS="cpu:0,cpu:1,cpu:2,cpu:3",
            EMBEDDING_WORKER_MAX_TASKS_PER_CHILD="2",
            EMBEDDING_WARM_UP="0",
        )
        log_path = tmp_path / "worker.log"
        with celery_worker(env, log_path, queues="gpu", name="dev4@%h", concurrency=None):
            log = log_path.read_text()
            assert "gpu pool of 4 (child 0: cpu:0, child 1: cpu:1" in log, log[-2000:]
            client = Celery("t", broker=broker, backend=broker)
            seen: dict[int, set[int]] = {}  # child index -> pids seen there
            devices: set[str] = set()
            deadline = time.monotonic() + 120
            # Four at a time, each holding its child a moment, until every child has answered
            # and one child was replaced (2 tasks each) and answered again.
            while time.monotonic() < deadline and not (
                len(devices) == 4 and any(len(p) > 1 for p in seen.values())
            ):
                sent = [
                    client.send_task("embedding.worker_device", kwargs={"hold_s": 1.0}, queue="gpu")
                    for _ in range(4)
                ]
                for reply in (r.get(timeout=60) for r in sent):
                    assert reply["device"] == f"cpu:{reply['index']}", reply
                    devices.add(reply["device"])
                    seen.setdefault(reply["index"], set()).add(reply["pid"])
            assert devices == {"cpu:0", "cpu:1", "cpu:2", "cpu:3"}, seen
            assert any(len(pids) > 1 for pids in seen.values()), seen  # a successor, same device
            log = log_path.read_text()
            for index in range(4):
                assert f"gpu child {index} (pid" in log and f"): cpu:{index}" in log

            # The presence record, and /ready, say which child has which device.
            from workers.lifeline.worker_presence import devices as recorded

            nodes = recorded(broker)
            node = next(n for n in nodes if n.startswith("dev4@"))
            assert {i: c["device"] for i, c in nodes[node].items()} == {
                str(i): f"cpu:{i}" for i in range(4)
            }
            monkeypatch.setenv("EMBEDDING_BROKER_URL", broker)
            monkeypatch.setenv("EMBEDDING_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
            get_settings.cache_clear()
            try:
                import json

                from api.routes import health

                reply = health.ready()
                body = json.loads(reply.body)
                assert reply.status_code == 200, body
                assert body["devices"][node] == {str(i): f"cpu:{i}" for i in range(4)}
            finally:
                get_settings.cache_clear()


def test_a_group_waits_for_a_busy_device_and_holds_it(tmp_path, monkeypatch):
    """A group takes its devices' locks; a single task on a held device waits for it."""
    import threading

    monkeypatch.setenv(gpu_devices.NODE_ENV, f"test-{tmp_path.name}")
    monkeypatch.setenv(gpu_devices.DEVICE_ENV, "cpu:1")
    gpu_devices.take_own_device()  # a task is running on cpu:1 (this "child")
    entered = threading.Event()

    def group() -> None:
        # another child's group wants cpu:0 and cpu:1: it waits for our task
        fds = [gpu_devices._lock(gpu_devices._device_lock(d)) for d in ("cpu:0", "cpu:1")]
        entered.set()
        for fd in fds:
            os.close(fd)

    thread = threading.Thread(target=group)
    thread.start()
    assert not entered.wait(0.5)  # held by the running task
    gpu_devices.release_own_device()  # the task ends
    assert entered.wait(30)
    thread.join()
    with gpu_devices.hold_for_group(["cpu:1", "cpu:0"]):
        assert gpu_devices._own_fd is None  # ours let go while the group holds it in order
    assert gpu_devices._own_fd is None

"""Each worker pool runs torch on its own thread counts: the defaults split the cores between
the pools that run torch, the settings override them, and a real `embedctl worker` reports
what each pool runs on (the latency they buy is benchmarks/contention.py's)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from embedding.inference.torch_threads import default_threads, pool_threads
from tests.support import ROOT


@pytest.mark.parametrize(
    ("pool", "running", "cores", "want"),
    [
        ("gpu", ("gpu", "cpu", "embed"), 2, (1, 1)),
        ("embed", ("gpu", "cpu", "embed"), 2, (1, 1)),
        ("cpu", ("gpu", "cpu", "embed"), 2, (1, 1)),
        ("gpu", ("gpu", "cpu", "embed"), 7, (4, 1)),  # the odd core trains
        ("embed", ("gpu", "cpu", "embed"), 7, (3, 1)),
        ("gpu", ("gpu", "cpu"), 8, (8, 1)),  # alone with models: every core
        ("embed", ("embed",), 8, (8, 1)),
        ("gpu", ("gpu", "embed"), 1, (1, 1)),  # never zero
    ],
)
def test_the_default_splits_the_cores_between_the_torch_pools(pool, running, cores, want):
    assert default_threads(pool, running, cores) == want


def test_settings_override_the_default(monkeypatch):
    from core.config import Settings

    settings = Settings(torch_threads_gpu=3, torch_interop_threads_embed=2)
    assert pool_threads("gpu", ("gpu", "embed"), settings, n_cores=2) == (3, 1)
    assert pool_threads("embed", ("gpu", "embed"), settings, n_cores=2) == (1, 2)
    with pytest.raises(ValueError, match="unknown pool"):
        default_threads("gpus", ("gpu",), 2)


def test_a_threads_count_holds_when_another_thread_sets_its_own_before_the_first_op():
    """The embedded workers' order: the gpu thread applies its count, the cpu thread applies
    1 before the gpu thread has run an op, then the gpu thread runs. torch sets a thread up
    lazily from the process default at its first parallel call, so without the fix the gpu
    thread ran on 1 (validate's gradient step: 95 ms against 62 on two cores). Run in its own
    interpreter: the counts are process state, and pytest's threads are set up already."""
    script = """
import threading, torch
from embedding.inference.torch_threads import apply
applied, other_done, seen = threading.Event(), threading.Event(), []
def gpu():
    apply(2, 1)
    applied.set()
    other_done.wait()
    torch.ones(1 << 18).add_(1)  # a parallel op
    seen.append(torch.get_num_threads())
def cpu():
    applied.wait()
    apply(1, 1)
    other_done.set()
threads = [threading.Thread(target=gpu), threading.Thread(target=cpu)]
for t in threads: t.start()
for t in threads: t.join()
print(seen[0])
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2"], out.stdout


def test_pass_pool_workers_run_on_one_core_and_the_caller_keeps_its_count():
    script = """
import torch
from embedding.inference.pass_pool import PassPool
torch.set_num_threads(2)
pool = PassPool(2)
torch.set_num_threads(2)  # a later default changes no worker's count
print(*sorted(pool.submit(torch.get_num_threads).result() for _ in range(4)), torch.get_num_threads())
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1", "1", "2"], out.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_each_pool_of_a_real_worker_runs_its_own_thread_counts(tmp_path):
    """`embedctl worker --queues gpu,cpu,embed`: the gpu and embed pools split the cores
    (before, each ran torch on every core and they starved each other), and a setting
    changes one pool only."""
    from celery import Celery

    from embedding.inference.torch_threads import cores
    from tests.support import celery_worker, postgres_database, redis_url, service_env

    n = cores()
    with postgres_database() as db_url:
        env = service_env(
            db_url,
            redis_url(15),
            tmp_path,
            EMBEDDING_TORCH_INTEROP_THREADS_EMBED="2",
            EMBEDDING_TOKENIZER_PARALLELISM="on",  # auto is off on this CPU-only machine
        )
        broker = env["EMBEDDING_BROKER_URL"]
        client = Celery(broker=broker, backend=env["EMBEDDING_RESULT_BACKEND"])
        client.conf.update(task_serializer="json", accept_content=["json"])
        with celery_worker(env, tmp_path / "worker.log", queues="gpu,cpu,embed"):
            got = {
                queue: client.send_task("embedding.torch_threads", queue=queue).get(timeout=60)
                for queue in ("gpu", "cpu", "embed")
            }
    assert (got["gpu"]["intra_op"], got["gpu"]["inter_op"]) == default_threads(
        "gpu", ("gpu", "cpu", "embed"), n
    )
    assert (got["embed"]["intra_op"], got["embed"]["inter_op"]) == (max(1, n // 2), 2)
    assert (got["cpu"]["intra_op"], got["cpu"]["inter_op"]) == (1, 1)
    assert got["gpu"]["intra_op"] + got["embed"]["intra_op"] == max(2, n)
    # Each pool tokenizes on every core where its tasks run when told (the CLI does not).
    assert env.get("TOKENIZERS_PARALLELISM") != "true"
    assert all(got[q]["tokenizers_parallel"] for q in ("gpu", "cpu", "embed")), got


@pytest.mark.parametrize("mode", ["off", "on", "auto"])
def test_parallel_tokenizing_follows_its_setting(monkeypatch, mode):
    """on and off as said; auto only where the pool's models run on a GPU (here, none)."""
    import torch

    from core.config import get_settings
    from workers.pool_threads import parallel_tokenizing

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("EMBEDDING_TOKENIZER_PARALLELISM", mode)
    monkeypatch.delenv("EMBEDDING_DEVICE", raising=False)
    get_settings.cache_clear()
    try:
        want = {"on": True, "off": False, "auto": torch.cuda.is_available()}[mode]
        assert parallel_tokenizing() is want
        assert os.environ["TOKENIZERS_PARALLELISM"] == ("true" if want else "false")
    finally:
        get_settings.cache_clear()

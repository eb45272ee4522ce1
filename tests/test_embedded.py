"""The embedded default: no broker, no server database; the same tasks, chord and code path."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """Settings with no broker and a SQLite file, migrated."""
    from core.config import get_settings
    from db import migrate

    for key in list(os.environ):
        if key.startswith("EMBEDDING_"):
            monkeypatch.delenv(key)
    url = f"sqlite:///{tmp_path / 'embedding.db'}"
    monkeypatch.setenv("EMBEDDING_DATABASE_URL", url)
    monkeypatch.setenv("EMBEDDING_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    get_settings.cache_clear()
    migrate.upgrade(url)
    yield tmp_path
    get_settings.cache_clear()


def test_embedded_fine_tune_with_no_services(embedded):
    from workers.app import embedded_worker, is_embedded
    from workers.client import job_status, submit_finetune

    assert is_embedded()
    with embedded_worker():
        job_id = submit_finetune(
            "minilm",
            triplets=[("def a(x)", "def b(y)", "SELECT 1"), ("class A", "class B", "import os")],
            epochs=2,
            lr=1e-4,
            batch_size=2,
            idempotency_key="embedded-1",
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job_status(job_id)["status"] in ("queued", "running"):
            time.sleep(0.2)
    job = job_status(job_id)
    assert job["status"] == "succeeded", job
    assert [e["epoch"] for e in job["epochs"]] == [1, 2]
    assert job["model_version_id"] is not None and job["sent_at"] is not None
    assert (embedded / "artifacts" / "jobs" / job_id / "model" / "model.safetensors").is_file()
    # The same key and request: the same job. The same key with another request: refused
    # (issue 15; it used to return the first job silently).
    same = {"epochs": 2, "lr": 1e-4, "batch_size": 2, "idempotency_key": "embedded-1"}
    triplets = [("def a(x)", "def b(y)", "SELECT 1"), ("class A", "class B", "import os")]
    assert submit_finetune("minilm", triplets=triplets, **same) == job_id
    from workers.jobs.idempotency import IdempotencyConflict

    with pytest.raises(IdempotencyConflict) as info:
        submit_finetune("minilm", triplets=[("x", "y", "z")], idempotency_key="embedded-1")
    assert info.value.job_id == job_id


ROWS = [
    (f"def process_{i}(data): return transform(data, {i})", f"def handle_{i}(items)", f"DROP {i}")
    for i in range(200)
]


def test_bookkeeping_is_answered_while_a_fine_tune_runs(embedded, monkeypatch):
    """The embedded default runs the gpu queue in a worker thread of its own: a cpu-queue
    ``finetune_request`` is answered within a second while a fine-tune trains (one thread
    for every queue made it wait for the whole job); then the job is cancelled."""
    from workers.app import app, embedded_worker
    from workers.client import cancel_job, job_status, submit_finetune

    # Polled as the embedded API polls it (the memory broker's default is once a second).
    options = {**app.conf.broker_transport_options, "polling_interval": 0.01}
    monkeypatch.setitem(app.conf, "broker_transport_options", options)
    with embedded_worker():
        job_id = submit_finetune("minilm", triplets=ROWS, epochs=5, batch_size=4, lr=1e-5)
        deadline = time.monotonic() + 60
        while job_status(job_id)["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job_status(job_id)["status"] == "running"
        duties = [t for t in threading.enumerate() if t.name == "lifeline" and t.is_alive()]
        assert len(duties) == 1, "two workers, one duty loop"
        payload = {
            "model": "minilm",
            "triplets": [
                dict(zip(("anchor", "positive", "negative"), r, strict=True)) for r in ROWS[:2]
            ],
        }
        start = time.monotonic()
        reply = app.send_task("embedding.finetune_request", kwargs=payload).get(
            timeout=10, interval=0.01, disable_sync_subtasks=False
        )
        took = time.monotonic() - start
        assert job_status(job_id)["status"] == "running", "the fine-tune must still be training"
        assert took < 1.0, f"finetune_request took {took:.2f} s behind a running fine-tune"
        assert reply["status"] == "queued" and reply["job_id"] != job_id, reply
        assert cancel_job(reply["job_id"])["status"] == "cancelled"  # queued: at once
        cancel_job(job_id)
        deadline = time.monotonic() + 30
        while job_status(job_id)["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
    job = job_status(job_id)
    assert job["status"] == "cancelled", job


def test_idle_embedded_workers_stop_as_soon_as_asked(embedded):
    """Celery's loop for the memory transport looks at its stop flag only between waits of
    up to 2 s; ours caps each wait (workers/embedded_transport.py), so leaving the embedded
    workers (the end of every ``embedctl validate``, of the embedded API) takes well under
    a second, where it took about 2 s."""
    from workers.app import embedded_worker

    with embedded_worker() as workers:
        threads = [t for t in threading.enumerate() if t.name.startswith("embedded-celery-")]
        assert len(threads) == len(workers) == 2
        asked = time.monotonic()
    stopped = time.monotonic() - asked
    assert not any(t.is_alive() for t in threads)
    assert stopped < 1.0, f"the embedded workers took {stopped:.2f} s to stop"


@pytest.mark.embedding_validation
def test_make_run_main_job_passes_on_minilm(tmp_path):
    """``embedctl validate`` as ``make run`` runs it: the whole chord, embedded, under 60 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDING_")}
    env["PYTHONPATH"] = str(ROOT)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "validate", "--junit", "out.xml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    took = time.perf_counter() - start
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "VERDICT: PASSED — all 4 checks passed" in out.stdout
    for section in (
        "Model loading: PASS",
        "Inference quality: PASS",
        "Fine-tuning convergence: PASS",
        "Performance benchmark: PASS",
    ):
        assert section in out.stdout
    assert took < 60, took
    # The seed's timing criteria assume the machine: the gradient step ran on every core,
    # not on a share kept for an embed pool that validate does not run.
    step = re.search(r"gradient step \(5 triplets\):.*, (\d+) threads", out.stdout)
    assert step and int(step.group(1)) == len(os.sched_getaffinity(0)), out.stdout[-3000:]
    assert (tmp_path / "embedding.db").is_file() and (tmp_path / "out.xml").is_file()


def test_one_check_alone_and_a_failing_exit_code(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDING_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "validate",
            "--check",
            "model_loading",
            "--models",
            "minilm,qodo",
        ],
        cwd=tmp_path,
        env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    # qodo cannot be had offline: reported unavailable with its reason, and the run does not pass.
    assert out.returncode == 1, out.stdout[-2000:]
    assert "Model loading: UNAVAILABLE" in out.stdout and "qodo" in out.stdout
    assert "Inference quality" not in out.stdout


def test_report_page_renders_in_headless_chromium(embedded):
    import shutil

    from workers.reports.dashboard import write_report

    chromium = shutil.which("chromium")
    assert chromium, "make test installs Debian's chromium (scripts/ensure_chromium.sh)"
    from db import repo
    from db.session import session_scope

    with session_scope() as session:
        job = repo.jobs.create_job(
            session, "minilm", {"loss": "triplet", "epochs": 2}, project_id="proj_default"
        )
        for epoch, loss in ((1, 0.5), (2, 0.3)):
            repo.jobs.record_epoch(session, job.id, epoch, loss, 1e-4, 1.0, 5.0)
        for p50 in (5.0, 4.5):
            repo.benchmarks.add_benchmark_result(
                session,
                model="minilm",
                device="cpu",
                precision="bf16",
                batch_size=64,
                latency_p50_ms=p50,
                latency_p95_ms=p50 + 1,
                latency_p99_ms=p50 + 2,
                latency_mean_ms=p50,
                latency_min_ms=p50 - 1,
                latency_max_ms=p50 + 3,
                throughput_per_s=200.0,
                peak_memory_mb=900.0,
                package_version="0.1.0",
                host="test",
            )
    index = write_report(Path(embedded) / "report")
    out = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={embedded / 'chrome'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            index.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 'data-images-loaded="3"' in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


def test_a_check_task_that_dies_ends_the_run_as_error(tmp_path):
    """Not a failed criterion: the task itself raises. The chord's errback records the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDING_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "validate",
            "--models",
            "no-such-model",
            "--check",
            "model_loading",
            "--check",
            "inference_quality",
            "--json",
            "out.json",
            "--timeout",
            "120",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1
    import json

    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["status"] == "error", summary
    assert "no-such-model" in (summary["verdict"] or "")

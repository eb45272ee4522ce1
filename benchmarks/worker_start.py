"""How long a cold ``embedctl worker`` takes to listen: launch to every queue consumed.

It is what ``embedctl validate --worker-timeout`` must cover in CI (``embedctl worker &``
then ``embedctl validate`` at once). Each round starts a fresh worker process, asks
``inspect().active_queues()`` every half second until each of its queues is consumed,
prints the seconds, and stops it.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/worker_start.py [--rounds 3]
        [--queues gpu,cpu,embed] [--broker redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this folder is sys.path[0], and its queue.py would shadow the stdlib's.
sys.path[0] = str(ROOT)


def one_start(queues: str, env: dict[str, str], app) -> float:
    """Seconds from launch until every queue in ``queues`` is consumed."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "--queues", queues,
         "--hostname", f"start{os.getpid()}-{int(started)}@%h"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    need = set(queues.split(","))
    try:
        while time.monotonic() - started < 180:
            replies = app.control.inspect(timeout=0.5).active_queues() or {}
            if need <= {q["name"] for w in replies.values() for q in w or []}:
                return time.monotonic() - started
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}")
        raise RuntimeError("the worker did not listen within 180 s")
    finally:
        proc.send_signal(signal.SIGTERM)  # `embedctl worker` passes it on to its pools
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # a pool stopped mid-start may hang: end it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def cpu_model() -> str:
    """``lscpu``'s model name (/proc/cpuinfo), or the architecture where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queues", default="gpu,cpu,embed")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="worker-start-"))
    env = {
        **os.environ,
        "EMBEDDING_BROKER_URL": args.broker,
        "EMBEDDING_DATABASE_URL": f"sqlite:///{scratch / 'record.db'}",
        "EMBEDDING_ARTIFACTS_DIR": str(scratch / "artifacts"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    os.environ.update(env)
    from workers.app import app

    seconds = [one_start(args.queues, env, app) for _ in range(args.rounds)]
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores")
    print(f"embedctl worker --queues {args.queues}: listening after " + ", ".join(
        f"{s:.1f}" for s in seconds) + " s")  # fmt: skip


if __name__ == "__main__":
    main()

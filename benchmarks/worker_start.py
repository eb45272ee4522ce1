"""How long a cold ``embedctl worker`` takes to listen: launch to every queue consumed.

It is what ``embedctl validate --worker-timeout`` must cover in CI (``embedctl worker &``
then ``embedctl validate`` at once). Each round starts a fresh worker process, asks
``inspect().active_queues()`` every half second until each of its queues is consumed,
prints the seconds, and stops it.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/worker_start.py [--rounds 3]
        [--queues gpu,cpu,embed] [--broker redis://127.0.0.1:6379/14] [--validate]
        [--no-warm-up]

``--validate`` also runs ``embedctl validate`` as soon as the worker listens (CI's recipe)
and prints the suite's wall time and each check's duration: the first request's share of
first-use costs, which ``EMBEDDING_WARM_UP`` (set to 1 here; ``--no-warm-up`` sets 0 for
the comparison) moves into the worker's start.
"""

from __future__ import annotations

import argparse
import json
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


def one_start(
    queues: str, env: dict[str, str], app, validate: bool = False
) -> tuple[float, dict | None]:
    """Seconds from launch until every queue in ``queues`` is consumed, and (``validate``)
    the validation suite run right then: its wall time and each check's duration."""
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
                listening = time.monotonic() - started
                return listening, (run_validate(env) if validate else None)
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


def run_validate(env: dict[str, str]) -> dict:
    """``embedctl validate`` on the default model; wall seconds and each check's duration."""
    out = Path(tempfile.mkdtemp(prefix="validate-")) / "run.json"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "validate", "--json", str(out)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"validate failed ({done.returncode}): {done.stderr[-1500:]}")
    summary = json.loads(out.read_text())
    checks = {c["name"]: float(c.get("duration_s") or 0) for c in summary.get("checks", [])}
    return {"wall_s": wall, "checks": checks, "status": summary.get("status")}


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
    parser.add_argument("--validate", action="store_true", help="run the suite once it listens")
    parser.add_argument("--no-warm-up", action="store_true", help="EMBEDDING_WARM_UP=0")
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
        "EMBEDDING_WARM_UP": "0" if args.no_warm_up else "1",
    }
    os.environ.update(env)
    from workers.app import app

    rounds = [one_start(args.queues, env, app, args.validate) for _ in range(args.rounds)]
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores")
    print(f"warm-up: {'off' if args.no_warm_up else 'on'}")
    print(f"embedctl worker --queues {args.queues}: listening after " + ", ".join(
        f"{s:.1f}" for s, _ in rounds) + " s")  # fmt: skip
    for _, run in rounds:
        if run is not None:
            checks = ", ".join(f"{name} {s:.1f} s" for name, s in run["checks"].items())
            print(f"validate right after: {run['status']}, {run['wall_s']:.1f} s ({checks})")


if __name__ == "__main__":
    main()

"""Sharing one GPU slot among projects: each project's wait and share of the GPU time against
its weight, with fair-share dispatch (ours) and with the first-in-first-out queue Celery
gives (the peer, what the system did before).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fairness.py [--jobs 8] [--epochs 1]

One real ``embedctl worker --queues gpu,cpu`` with one gpu slot, on a private PostgreSQL
database and Redis database. Three projects: ``heavy`` (weight 2) and ``normal`` (weight 1)
each submit a burst of ``--jobs`` short fine-tunes (minilm, the seed triplets) at once, and
``small`` (weight 1) submits one job just after. The same arrivals run twice: with the
dispatcher (jobs wait in the database, a free slot takes the next job of the project
furthest below its share), and with every job sent at once
(``EMBEDDING_FLEET_GPU_SLOTS=1000``: the broker's queue order, first in, first out).

Prints per project and mode: jobs, GPU-seconds while every project still had jobs waiting
(the contended period) and its share against the weight's share, the mean and longest wait
from submit to claim, and the small project's wait in the peer mode over ours.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # this folder holds queue.py: the stdlib's queue must win

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedding.data.examples import SEED_TRIPLETS
from tests.support import celery_worker, postgres_database, redis_url, service_env

REDIS_DB = 3
WEIGHTS = {"heavy": 2.0, "normal": 1.0, "small": 1.0}
SUBMIT = """
import json, sys
from workers.client import submit_finetune
rows, plan = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps([
    submit_finetune("minilm", triplets=rows, loss="triplet", batch_size=5, epochs=e, project=p)
    for p, e in plan
]))
"""


def run(cmd: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}: {out.stderr[-2000:]}")
    return out.stdout


def submit(env: dict[str, str], plan: list[tuple[str, int]]) -> list[str]:
    rows = [{"anchor": a, "positive": p, "negative": n} for a, p, n in SEED_TRIPLETS]
    return json.loads(run([sys.executable, "-c", SUBMIT, json.dumps(rows), json.dumps(plan)], env))


def jobs_of(db_url: str, ids: list[str]) -> list[dict]:
    from db import repo
    from db.session import session_scope

    with session_scope(db_url) as session:
        names = {p.id: p.name for p in repo.projects.list_projects(session)}
        out = []
        for job_id in ids:
            job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
            out.append(
                {
                    "project": names[job.project_id],
                    "status": job.status,
                    "created": job.created_at,
                    "started": job.started_at,
                    "finished": job.finished_at,
                }
            )
        return out


def one_mode(env: dict[str, str], db_url: str, log: Path, jobs: int, epochs: int) -> list[dict]:
    with celery_worker(env, log, queues="gpu,cpu", ready_timeout=180):
        ids = submit(env, [("heavy", epochs)] * jobs + [("normal", epochs)] * jobs)
        ids += submit(env, [("small", epochs)])
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            found = jobs_of(db_url, ids)
            if all(j["status"] in ("succeeded", "failed", "cancelled") for j in found):
                return found
            time.sleep(1.0)
    raise RuntimeError("the jobs did not end within an hour")


def summary(found: list[dict]) -> dict[str, dict]:
    by_start = sorted(found, key=lambda j: j["started"])
    waiting = {p: sum(1 for j in found if j["project"] == p) for p in WEIGHTS}
    contended: dict[str, float] = dict.fromkeys(WEIGHTS, 0.0)
    for job in by_start:  # while every project of a burst still has a job waiting
        if min(waiting["heavy"], waiting["normal"]) == 0:
            break
        contended[job["project"]] += (job["finished"] - job["started"]).total_seconds()
        waiting[job["project"]] -= 1
    total = sum(contended[p] for p in ("heavy", "normal")) or 1.0
    out = {}
    for project in WEIGHTS:
        mine = [j for j in found if j["project"] == project]
        waits = [(j["started"] - j["created"]).total_seconds() for j in mine]
        out[project] = {
            "jobs": len(mine),
            "failed": sum(1 for j in mine if j["status"] != "succeeded"),
            "contended_gpu_s": contended[project],
            "share": contended[project] / total if project != "small" else None,
            "wait_mean_s": statistics.mean(waits),
            "wait_max_s": max(waits),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs in each burst")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per job")
    args = parser.parse_args()
    from db import migrate

    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="fairness-"))
    for mode, slots in (("fair share (ours)", "0"), ("FIFO (Celery's queue)", "1000")):
        with postgres_database("emb_fair") as db_url:
            migrate.upgrade(db_url)
            artifacts = tmp / mode.split()[0] / "artifacts"
            artifacts.mkdir(parents=True)
            env = service_env(
                db_url, redis_url(REDIS_DB), artifacts, EMBEDDING_FLEET_GPU_SLOTS=slots
            )
            for name, weight in WEIGHTS.items():
                run([sys.executable, "-m", "workers.cli", "projects", "create", name], env)
                run(
                    [sys.executable, "-m", "workers.cli", "projects", "set-limits", name,
                     "--weight", str(weight)],
                    env,
                )  # fmt: skip
            started = time.perf_counter()
            found = one_mode(
                env, db_url, tmp / f"{mode.split()[0]}-worker.log", args.jobs, args.epochs
            )
            results[mode] = (summary(found), time.perf_counter() - started)

    burst_share = WEIGHTS["heavy"] / (WEIGHTS["heavy"] + WEIGHTS["normal"])
    print(
        f"fairness: one gpu slot ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores), bursts of {args.jobs} jobs (heavy w2, normal w1) then "
        f"1 job (small w1), {args.epochs} epoch(s) each"
    )
    print(f"{'mode':<24}{'project':<8}{'jobs':>5}{'GPU-s*':>8}{'share*':>8}{'weight':>8}"
          f"{'wait mean':>11}{'wait max':>10}")  # fmt: skip
    for mode, (rows, wall) in results.items():
        for project, row in rows.items():
            share = f"{row['share']:.2f}" if row["share"] is not None else "-"
            target = (
                f"{burst_share if project == 'heavy' else 1 - burst_share:.2f}"
                if project != "small"
                else "-"
            )
            print(
                f"{mode:<24}{project:<8}{row['jobs']:>5}{row['contended_gpu_s']:>8.1f}"
                f"{share:>8}{target:>8}{row['wait_mean_s']:>10.1f}s{row['wait_max_s']:>9.1f}s"
            )
        print(f"{mode:<24}wall {wall:.0f} s")
    ours, peer = results["fair share (ours)"][0], results["FIFO (Celery's queue)"][0]
    print(
        "* while both bursts had jobs waiting. small's wait, FIFO / ours: "
        f"{peer['small']['wait_mean_s'] / max(ours['small']['wait_mean_s'], 1e-9):.1f}x; "
        f"heavy's share, ours {ours['heavy']['share']:.2f} / peer {peer['heavy']['share']:.2f} "
        f"against its weight's {burst_share:.2f}"
    )


if __name__ == "__main__":
    main()

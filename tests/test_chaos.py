"""Chaos trials: the whole worker (its process group) SIGKILLed at random moments of
fine-tunes, one stack for all of them (issue 14).

One Redis (tests.servers.RedisServer), one PostgreSQL database, one ``embedctl beat`` and a
chain of real workers: the worker that rescues trial k's job is the victim of trial k+1, so
N trials start N+1 workers. Each trial aims at a kind of moment — during a training step,
during a checkpoint write (in-epoch checkpoints every 2 steps: minilm's take about a second
and a half), during export and registration — with a seeded random delay after what
announces it (the seed is printed; ``CHAOS_SEED`` replays a run), kills, and says what it
hit by what is observable at the kill: a checkpoint's temporary folder (``.<name>-*``, see
embedding/training/checkpoints.py) in the job's checkpoint folder, every epoch recorded but the job
not done, or neither (a step). Every job must end ``succeeded``, each epoch recorded once,
the rescue and the takeover recorded (``rescued``, ``retried``), the job moving again within
the lease, one rescue period and a worker's start, and its model must load.

``CHAOS_TRIALS`` sets the number of trials. The default, 3 (one of each aim: the aims are
cycled, then shuffled), is what should fit in about 90 s on a quiet 2-core machine: a trial
took 22-56 s here with the machine shared (load 2-4.5), perhaps 15-20 s quiet, and the
stack's start is some 12 s more. Four minilm checkpoint writes per run (some 270 MB each
with the optimizer state) and two model loads dominate a trial. ``scripts/chaos_kill.sh N``
(default 10) runs N and prints the table (also written to ``CHAOS_TABLE`` when set).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.support import (
    spawn_worker,
    stop_process,
    wait_for_worker,
)
from tests.test_lifeline import (
    LEASE_S,
    RESCUE_EVERY_S,
    TRIPLETS,
    _finished,
    _job,
    _submit,
    _wait,
    beat,
    lifeline_stack,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRIALS = int(os.environ.get("CHAOS_TRIALS", "3"))  # one of each aim
SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
EPOCHS = 2
ROWS = TRIPLETS[:12]  # batch 4: three steps an epoch; a checkpoint after step 2 and at the end
AIMS = ("step", "checkpoint write", "registration")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with lifeline_stack(tmp_path_factory.mktemp("chaos"), "emb_chaos") as stack:
        yield stack


def _checkpoint_writes(stack, job_id: str) -> list[str]:
    """Checkpoint folders being written now: their temporary names start with a dot."""
    folder = Path(stack["artifacts"]) / "jobs" / job_id / "checkpoints"
    if not folder.is_dir():
        return []
    return [p.name for p in folder.iterdir() if p.name.startswith(".") and p.is_dir()]


def _poll(condition, timeout: float = 60, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting for the moment to kill")


def _aim(stack, job_id: str, aim: str, rng: random.Random) -> float:
    """Wait for what announces the aimed moment, then a seeded random delay; returns it."""
    if aim == "checkpoint write":  # a temporary checkpoint folder appears
        _poll(lambda: _checkpoint_writes(stack, job_id), every=0.01)
        delay = rng.uniform(0.0, 0.6)
    elif aim == "registration":  # the last epoch is recorded: evaluation, export, register
        _poll(lambda: len(_job(stack, job_id)["epochs"]) == EPOCHS, every=0.01)
        delay = rng.uniform(0.0, 0.3)
    else:  # a step: the steps that follow one of the first two checkpoints
        nth = rng.choice((1, 2))
        _poll(lambda: _job(stack, job_id)["events"].count("checkpoint") >= nth, every=0.01)
        delay = rng.uniform(0.0, 0.25)
    time.sleep(delay)
    return delay


def _moment(stack, job_id: str) -> str:
    """What the kill hit, from what it left (the worker is dead: nothing moves)."""
    job = _job(stack, job_id)
    if _finished(job):
        return "after the end"
    if _checkpoint_writes(stack, job_id):
        return "checkpoint write"
    if len(job["epochs"]) == EPOCHS:
        return "export/registration"
    if "checkpoint" in job["events"] or job["epochs"]:
        return "step"
    return "loading or first steps"


@contextlib.contextmanager
def _workers(stack):
    """Starts workers (without waiting for them) and stops every one of them at the end."""
    started: list = []

    def start(name: str):
        proc, log = spawn_worker(stack["env"], Path(stack["artifacts"]) / f"{name}.log")
        started.append((proc, log))
        return proc

    try:
        yield start
    finally:
        for proc, log in started:
            stop_process(proc)
            log.close()


def _ready(stack, proc, name: str) -> None:
    wait_for_worker(stack["env"], proc, Path(stack["artifacts"]) / f"{name}.log", 60, pools=2)


def test_whole_worker_killed_at_random_moments_every_job_succeeds(stack):
    from embedding.inference.encoder import Encoder

    rng = random.Random(SEED)
    aims = [AIMS[k % len(AIMS)] for k in range(TRIALS)]
    rng.shuffle(aims)
    rows: list[dict] = []
    with beat(stack, "beat-chaos"), _workers(stack) as start:
        victim, victim_name = start("w0"), "w0"
        _ready(stack, victim, "w0")
        for k, aim in enumerate(aims, start=1):
            began = time.monotonic()
            job_id = _submit(stack, epochs=EPOCHS, triplets=ROWS)
            _poll(lambda j=job_id: "claimed" in _job(stack, j)["events"])
            # The next worker starts now, beside the victim's run: it is the rescuer of this
            # trial and the victim of the next (N trials, N + 1 workers). Idle until the kill:
            # nothing is in the gpu queue until the rescue pass re-sends this job.
            spare = start(f"w{k}")
            delay = _aim(stack, job_id, aim, rng)
            os.killpg(victim.pid, signal.SIGKILL)  # the whole worker: parent, pools, children
            moment = _moment(stack, job_id)
            killed = time.monotonic()
            victim.wait(timeout=10)
            _ready(stack, spare, f"w{k}")
            job = _wait(stack, job_id, lambda j: j["events"].count("claimed") == 2 or _finished(j))
            moved_after = time.monotonic() - killed
            job = _wait(stack, job_id, _finished)
            said = _log_lines(stack, job_id, (victim_name, f"w{k}"))
            victim, victim_name = spare, f"w{k}"
            rows.append(
                {
                    "trial": k,
                    "aim": aim,
                    "delay": delay,
                    "moment": moment,
                    "status": job["status"],
                    "epochs": job["epochs"],
                    "epoch_events": job["events"].count("epoch"),
                    "retried": "retried" in job["events"],
                    "rescued": "rescued" in job["events"],
                    "timeline": _timeline(stack, job_id),
                    "moved_after": moved_after,
                    "path": job["path"],
                    "took": time.monotonic() - began,
                    "error": job["error"],
                    "said": said,
                }
            )
    for row in rows:  # after the trials: the workers are gone, the cores are free
        vectors = Encoder.load(row["path"], device="cpu").encode(["x"]) if row["path"] else None
        row["loads"] = vectors is not None and vectors.shape == (1, 384)
    table = _table(rows)
    print("\n" + table)
    if os.environ.get("CHAOS_TABLE"):
        Path(os.environ["CHAOS_TABLE"]).write_text(table + "\n")
    for row in rows:
        assert row["status"] == "succeeded", table
        assert row["epochs"] == list(range(1, EPOCHS + 1)), table
        assert row["epoch_events"] == EPOCHS, table  # each epoch recorded exactly once
        assert row["loads"], table
        if row["moment"] != "after the end":
            # taken over by the next worker, not finished by luck, through the rescue pass's
            # re-send (the dead worker's copy is unacked for hours). Once in CI (seed 335864)
            # a trial was taken over without a rescue: the relay duty (every second here) had
            # sent the job too while the submit's own send was on its way, and the next worker
            # took that duplicate at its start, met the live lease, retried after it and took
            # the job over. Replayed with a 2.5 s send in the old order (send, then mark):
            # "taken over without a rescue"; in the outbox's order now (take, then send):
            # "rescued". The table has what the workers logged about the job.
            assert row["rescued"] and row["retried"], table
            # the lease, one rescue period and what is left of the next worker's start (it
            # starts at the claim, before the kill)
            assert row["moved_after"] < LEASE_S + RESCUE_EVERY_S + 30, table


def _log_lines(stack, job_id: str, names: tuple[str, ...], most: int = 12) -> str:
    """What the victim and the next worker logged about the job (its id, a lost child, a
    rejected or retried message): how its message came back, should no rescue send it."""
    marks = (job_id, "WorkerLost", "Rejected", "Retry", "lifeline")
    said = []
    for name in names:
        path = Path(stack["artifacts"]) / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        said += [
            f"{name}: {line[:200]}" for line in text.splitlines() if any(m in line for m in marks)
        ]
    return " | ".join(said[-most:])


def _timeline(stack, job_id: str) -> str:
    """The job's events with their seconds since it was created (printed for a failure)."""
    from db import repo
    from db.session import session_scope

    with session_scope(stack["db_url"]) as session:
        events = repo.jobs.job_events(session, job_id, scope=repo.ALL_PROJECTS)
        return " ".join(f"{e.kind}@{(e.at - events[0].at).total_seconds():.1f}" for e in events)


def _table(rows: list[dict]) -> str:
    lines = [
        f"chaos seed {SEED} (CHAOS_SEED={SEED} replays it), {len(rows)} trials",
        f"{'trial':<6}{'aimed at':<18}{'delay':>7}  {'moment (observed)':<24}"
        f"{'moved in':>9}  {'trial took':>10}  outcome",
    ]
    for r in rows:
        ok = r["status"] == "succeeded" and r["epoch_events"] == EPOCHS and r["loads"]
        ok = ok and (r["moment"] == "after the end" or r["retried"])
        how = ", rescued" if r["rescued"] else ""
        if r["retried"] and not r["rescued"]:
            how = f", taken over without a rescue; timeline: {r['timeline']}; logs: {r['said']}"
        outcome = (
            f"succeeded, each epoch once, model loads{how}"
            if ok
            else f"FAILED: {r['status']} epochs {r['epochs']} ({r['epoch_events']} events) "
            f"{r['error'] or ''}; timeline: {r['timeline']}"
        )
        lines.append(
            f"{r['trial']:<6}{r['aim']:<18}{r['delay']:>6.2f}s  {r['moment']:<24}"
            f"{r['moved_after']:>8.1f}s  {r['took']:>9.1f}s  {outcome}"
        )
    passed = sum(1 for r in rows if r["status"] == "succeeded")
    lines.append(f"{passed} of {len(rows)} succeeded")
    return "\n".join(lines)

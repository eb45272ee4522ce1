"""The life cycle of a fine-tune job, without Celery: testable with no broker.

Claim the job atomically in the database (a live lease elsewhere means another worker has
it), keep the lease fresh from a thread, train (resuming from the job's last checkpoint if
one exists, inside an epoch too), upsert each epoch's row as it finishes (with its
validation figures when the job has a validation set), save the model (the best epoch's
weights), register a model version and mark the job succeeded with what training concluded
(``result``: eval set, best epoch, exported epoch, early stop; a ``best_epoch`` event says
which epoch became the version) — or failed with its reason, or cancelled. Every write that must survive a database restart goes through
:func:`workers.lifeline.db_retry.with_db_retry`.

Cancel is honoured in every phase: the trainer stops at its next batch, and the lease
thread, which reads the flag every second, interrupts any other phase (loading, a long
evaluation, export) by raising :class:`JobCancelled` in the job's thread. A warm shutdown
(:mod:`workers.lifeline.warm_shutdown`) stops at the next batch with a checkpoint, gives the job
back (``queued``) and sends it again, so another worker resumes it at once. When the job
ends its checkpoints go (``job_keep_checkpoints`` keeps the last few, without optimizer
state).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.config import get_settings
from db import repo
from db.session import session_scope
from embedding.models.hub import ensure_under_roots
from embedding.training.checkpoints import prune_after_job
from workers.jobs.outbox import publish
from workers.lifeline import warm_shutdown
from workers.lifeline.db_retry import with_db_retry
from workers.lifeline.duties import gave_up_reason
from workers.serving.model_names import checked_model_name, fine_tuned_id, version_name
from workers.tenancy import project_id_of

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


class JobCancelled(Exception):
    """The job was cancelled; training stopped at a batch boundary."""


class JobHeldElsewhere(Exception):
    """Another live worker holds the job's lease; this delivery should come back later."""


class JobReleased(Exception):
    """A warm shutdown stopped the job at a batch with a checkpoint; it goes back to the queue."""


class GroupBroken(Exception):
    """A rank of the job's data-parallel group died (killed, out of memory, its exit code):
    the attempt ends, and the job waits in the outbox to resume from its last checkpoint."""


def job_dir(job_id: str) -> Path:
    """Where a job keeps its checkpoints and final model: the same folder on every delivery,
    so a redelivered job resumes from what the last worker wrote."""
    return Path(get_settings().artifacts_dir) / "jobs" / str(job_id)


def run_finetune_job(
    job_id: str,
    hostname: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Claim and run one job. A job that is not ours to run is left alone."""
    from workers.schemas import FinetuneRequest

    settings = get_settings()
    with session_scope() as session:
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        if job is None:
            raise LookupError(f"no fine-tune job {job_id}")
        if job.status in ("succeeded", "failed", "cancelled"):
            return {"job_id": str(job_id), "status": job.status, "duplicate": True}
        if job.status == "running" and job.attempts >= settings.job_max_attempts and _stale(job):
            reason = gave_up_reason(job.attempts, job.worker)
            repo.jobs.finish_job(session, job_id, "failed", error=reason, lost=True)
            return {"job_id": str(job_id), "status": "failed", "error": reason}
        claimed = repo.jobs.claim_job(
            session,
            job_id,
            hostname,
            allow_reclaim_running=True,
            stale_after_s=settings.job_lease_s,
        )
        if not claimed:
            if repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS).status == "running":
                raise JobHeldElsewhere(job_id)
            return {"job_id": str(job_id), "status": job.status, "duplicate": True}
        params = dict(job.params)
        model, project_id = job.model, job.project_id
    try:
        request = FinetuneRequest.model_validate({**params, "model": model, "project": project_id})
        with lease_kept(job_id), warm_shutdown.sigterm_noted():
            result = _train(job_id, request, progress)
    except JobCancelled:
        with session_scope() as session:
            repo.jobs.finish_job(session, job_id, "cancelled", error="cancelled by request")
        _prune(job_id)
        return {"job_id": str(job_id), "status": "cancelled"}
    except JobReleased:
        with session_scope() as session:
            repo.jobs.release_job(session, job_id, hostname, "warm shutdown, checkpoint written")
        publish(job_id)  # another worker resumes it now; if the broker is away, the lifeline will
        return {"job_id": str(job_id), "status": "released"}
    except GroupBroken as broken:
        return _group_broken(job_id, hostname, str(broken))
    except Exception as exc:
        fail_job(job_id, f"{type(exc).__name__}: {exc}")
        _prune(job_id)
        raise
    _prune(job_id)
    return result


def _group_broken(job_id: str, hostname: str, reason: str) -> dict[str, Any]:
    """A rank died: under the attempts cap the job is released (``queued``, a ``released``
    event with the reason) into the outbox, where the dispatcher sends it again in its
    fair-share turn (the task's end runs a pass) and it resumes from its last checkpoint,
    on as many devices as the worker that takes it gives it; at the cap it fails."""
    reason = f"data-parallel group ended: {reason}"[:4000]
    with session_scope() as session:
        attempts = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS).attempts
        if attempts >= get_settings().job_max_attempts:
            reason = f"{reason} (attempt {attempts}, the attempts cap)"
            repo.jobs.finish_job(session, job_id, "failed", error=reason[:4000])
            status = "failed"
        else:
            repo.jobs.release_job(session, job_id, hostname, reason)
            repo.jobs.return_to_outbox(session, job_id)
            status = "released"
    if status == "failed":
        _prune(job_id)
    return {"job_id": str(job_id), "status": status, "error": reason}


def _prune(job_id: str) -> None:
    """The job has ended: its checkpoints go, but the last ``job_keep_checkpoints``."""
    prune_after_job(job_dir(job_id) / "checkpoints", get_settings().job_keep_checkpoints)


@contextmanager
def lease_kept(job_id: str) -> Iterator[None]:
    """Refresh the job's lease from a background thread for as long as this worker runs it,
    and read the cancel flag every second.

    A thread, not the training loop, so that loading the model, evaluating and exporting
    (minutes on a large model) never let the lease lapse while the worker is alive, and a
    cancel reaches those phases too: the thread raises :class:`JobCancelled` in the job's
    thread (the trainer gets a moment to stop at its batch boundary first). A dead worker
    stops heartbeating and its job can be taken over after ``job_lease_s``.
    """
    target = threading.get_ident()
    stop = threading.Event()
    guard = threading.Lock()  # no interruption once the job's thread has left this block
    lease_every = max(0.2, get_settings().job_lease_s / 4)
    tick = min(1.0, lease_every)

    def beat() -> None:
        next_lease = time.monotonic() + lease_every
        cancel_seen: float | None = None
        while not stop.wait(tick):
            try:
                with session_scope() as session:
                    if time.monotonic() >= next_lease:
                        repo.jobs.heartbeat(session, job_id)
                        next_lease = time.monotonic() + lease_every
                    cancelled = repo.jobs.is_cancel_requested(session, job_id)
            except Exception as exc:  # a database blip: try again next tick
                log.warning("lease of job %s not refreshed: %s", job_id, type(exc).__name__)
                continue
            if not cancelled:
                continue
            cancel_seen = cancel_seen or time.monotonic()
            if time.monotonic() - cancel_seen >= 2.0:
                with guard:
                    if not stop.is_set():
                        _raise_in_thread(target, JobCancelled)
                return

    thread = threading.Thread(target=beat, name=f"lease-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with guard:
            stop.set()
        thread.join(timeout=5)


def _raise_in_thread(thread_id: int, exc: type[BaseException]) -> None:
    """Raise ``exc`` in another thread at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


def _train(job_id: str, request: Any, progress: Progress | None) -> dict[str, Any]:
    from embedding.data.examples import load_examples
    from embedding.training.config import TrainConfig
    from embedding.training.loop import finetune

    out = job_dir(job_id)
    roots = get_settings().model_roots
    group = job_group(request.devices_asked())  # [] or one: this process trains alone
    if request.dataset is not None:
        examples = load_examples(ensure_under_roots(request.dataset, roots, what="dataset"))
    elif request.triplets is not None:
        examples = [(t.anchor, t.positive, t.negative) for t in request.triplets]
    else:
        examples = [(p.anchor, p.positive) for p in request.pairs]
    # A request sent without the outbox (plain send_task) may leave the recipe unset.
    request = request.with_recipe(len(examples[0]))
    validation = request.validation_rows()
    if request.validation_dataset is not None:
        where = ensure_under_roots(request.validation_dataset, roots, what="validation_dataset")
        validation = load_examples(where)
    last_check = [0.0]

    def should_stop() -> bool:
        if warm_shutdown.requested():
            return True
        now = time.monotonic()
        if now - last_check[0] < 1.0:  # one cheap query a second at most
            return False
        last_check[0] = now
        try:
            with session_scope() as session:
                return repo.jobs.is_cancel_requested(session, job_id)
        except Exception:  # the database is away: keep training, ask again later
            return False

    def on_epoch_end(stats: Any) -> None:
        if not math.isfinite(stats.loss):
            raise ValueError(f"epoch {stats.epoch}: loss is {stats.loss}")

        def write() -> None:
            with session_scope() as session:
                repo.jobs.record_epoch(
                    session,
                    job_id,
                    epoch=stats.epoch,
                    train_loss=stats.loss,
                    lr=stats.lr,
                    duration_s=stats.duration_s,
                    samples_per_s=stats.samples_per_s,
                    eval=stats.eval or None,
                )

        with_db_retry(write, f"job {job_id} epoch {stats.epoch}")
        if progress:
            progress(
                {
                    "job_id": str(job_id),
                    "epoch": stats.epoch,
                    "epochs": request.epochs,
                    "loss": stats.loss,
                }
            )

    def on_checkpoint(path: Path, epochs_done: int, step: int) -> None:
        where = f"after epoch {epochs_done}" + (f", step {step} of the next" if step else "")
        if len(group) > 1:
            where += f"; rank 0 of {len(group)}"

        def write() -> None:
            with session_scope() as session:
                repo.jobs.add_job_event(
                    session,
                    job_id,
                    "checkpoint",
                    f"checkpoint {path.name} ({where})",
                    data={"epochs_done": epochs_done, "step": step, "world_size": len(group) or 1},
                )

        with_db_retry(write, f"job {job_id} checkpoint event")

    def on_prepared(note: str) -> None:
        def write() -> None:
            with session_scope() as session:
                repo.jobs.add_job_event(session, job_id, "recipe", note)

        with_db_retry(write, f"job {job_id} recipe event")

    settings = get_settings()
    config = TrainConfig(**request.hyperparameters())
    run = {
        "out_dir": out / "model",
        "checkpoint_dir": out / "checkpoints",
        "resume": True,
        "eval_examples": validation,
        "on_epoch_end": on_epoch_end,
        "should_stop": should_stop,
        "checkpoint_every_steps": settings.checkpoint_every_steps,
        "checkpoint_every_s": settings.checkpoint_every_s,
        "on_checkpoint": on_checkpoint,
        "on_prepared": on_prepared,
    }
    model = checked_model_name(
        request.model, scope=repo.scope.project(project_id_of(request.project))
    )
    train = _train_as_group(job_id, group) if len(group) > 1 else finetune
    result = train(model, examples, config, **run)
    if getattr(result, "stopped", False):
        raise JobReleased(job_id) if warm_shutdown.requested() else JobCancelled(job_id)
    model_path = Path(result.output_dir)
    digest = weights_sha256(model_path)
    project_id = project_id_of(request.project)
    summary = {**training_summary(result), "world_size": len(group) or 1}

    def register() -> int:
        with session_scope() as session:
            version = repo.versions.register_model_version(
                session,
                name=version_name(request.model, request.suffix),
                base_model=request.model,
                path=str(model_path),
                weights_sha256=digest,
                metrics=summary,
                project_id=project_id,
                size_bytes=folder_bytes(model_path),
            )
            repo.jobs.record_job_result(session, job_id, summary, selection_event(summary))
            repo.usage.add(
                session, project_id, pairs_trained=len(examples) * summary["epochs_trained"]
            )
            repo.jobs.finish_job(session, job_id, "succeeded", model_version_id=version.id)
            return version.version

    version_number = with_db_retry(register, f"job {job_id} model version")
    return {
        "job_id": str(job_id),
        "status": "succeeded",
        "model_path": str(model_path),
        "model_name": version_name(request.model, request.suffix),
        "model_version": version_number,
        "fine_tuned_model": fine_tuned_id(request.model, request.suffix, str(job_id)),
        "epoch_losses": list(result.epoch_losses),
        "result": summary,
    }


def job_group(n_devices: int | str) -> list[str]:
    """The worker devices a job asking ``n_devices`` trains on, this child's own first
    (rank 0); one device (or none known: the embedded default) runs in this process.
    More than the host has is :class:`workers.devices.NotEnoughDevices` (the job fails)."""
    from workers import devices

    if n_devices == 1:
        return []  # the host's devices are not even looked up
    host = devices.host_devices()
    own = os.environ.get(devices.DEVICE_ENV)
    if own is None or own not in host:  # not a pinned gpu child: the host's first device
        own = host[0] if host else devices.current().device
    return devices.group_devices(n_devices, own, host)


def _train_as_group(job_id: str, group: list[str]) -> Callable[..., Any]:
    """Train as a data-parallel group on ``group``'s devices: this child holds their locks
    for the run (the children that own them take no job meanwhile), spawns one rank per
    device and stays the job's face: its lease thread, cancel and events run here, rank 0's
    callbacks (epochs, checkpoints) come back here to be written. A rank that dies ends the
    group (:class:`GroupBroken`)."""
    from embedding.training.distributed import RankDied, finetune_distributed
    from workers import devices

    ranks, environment = devices.rank_devices(group)

    def train(model: Any, examples: Any, config: Any, **run: Any) -> Any:
        log.info("job %s: data-parallel group of %d on %s", job_id, len(group), ", ".join(group))
        with devices.hold_for_group(group), _may_start_processes():
            try:
                return finetune_distributed(
                    model, examples, config, devices=ranks, environment=environment, **run
                )
            except RankDied as died:
                raise GroupBroken(str(died)) from died

    return train


@contextmanager
def _may_start_processes() -> Iterator[None]:
    """Let a prefork pool child spawn the ranks with the standard ``multiprocessing``.
    billiard leaves it marked daemonic, which multiprocessing refuses children (the ranks
    are this child's to end: ``finetune_distributed`` ends them on every way out, and a rank
    whose launcher dies ends itself), and with billiard's authentication key, which refuses
    to be pickled into a spawned process's start: both are the standard kind meanwhile."""
    import multiprocessing.process as mp_process

    config = mp_process.current_process()._config  # type: ignore[attr-defined]
    before = dict(config)
    config.pop("daemon", None)
    if "authkey" in config:
        config["authkey"] = mp_process.AuthenticationString(bytes(config["authkey"]))
    try:
        yield
    finally:
        config.clear()
        config.update(before)


def training_summary(result: Any) -> dict[str, Any]:
    """What training concluded, as the job's ``result`` and the version's ``metrics``."""
    best = next((e for e in result.epochs if e.epoch == result.best_epoch), None)
    return {
        "eval_source": result.eval_source,
        "selected_by": result.selected_by,
        "best_epoch": result.best_epoch,
        "best_value": best.eval.get(result.selected_by) if best and result.selected_by else None,
        "exported_epoch": result.exported_epoch,
        "epochs_trained": len(result.epochs),
        "stopped_early": result.stopped_early,
        "stop_reason": result.stop_reason,
        "eval_before": result.eval_before,
        "eval_after": result.eval_after,
    }


def selection_event(summary: dict[str, Any]) -> str | None:
    """The timeline's words for the choice of epoch; None when nothing was chosen (no
    validation set: the last epoch is the version, as ``result`` says)."""
    best, exported = summary["best_epoch"], summary["exported_epoch"]
    if best is None:
        return None
    text = (
        f"best epoch {best} of {summary['epochs_trained']} selected by validation "
        f"{summary['selected_by']} {summary['best_value']:.4f}"
    )
    if exported == best:
        text += "; its weights are the model version"
    else:  # select_best_epoch off, or the best epoch's checkpoint was gone
        text += f"; epoch {exported}'s weights are the model version"
    if summary["stopped_early"]:
        text += f"; stopped early after epoch {summary['epochs_trained']}"
    elif summary.get("stop_reason"):
        text += f"; {summary['stop_reason']}"
    return text


def _stale(job: Any) -> bool:
    from db.models import utcnow

    beat = job.heartbeat_at
    return beat is None or (utcnow() - beat).total_seconds() >= get_settings().job_lease_s


def fail_job(job_id: str, reason: str) -> None:
    """Mark the job failed with ``reason`` (cut to fit the column)."""
    with session_scope() as session:
        repo.jobs.finish_job(session, job_id, "failed", error=reason[:4000])


def weights_sha256(folder: Path) -> str:
    """sha256 over the folder's safetensors files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        with path.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def folder_bytes(folder: Path) -> int:
    """The bytes of every file under ``folder``: what the model costs its project's storage."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())

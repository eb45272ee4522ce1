"""The life cycle of the work the tasks do, without Celery: testable with no broker.

A fine-tune job: claim it atomically in the database, train (resuming from the job's last
checkpoint if one exists), upsert each epoch's row as it finishes, save the model,
register a model version, and mark the job succeeded — or failed with its reason. A
validation run: each check writes its row; the summary sets the verdict.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from db import repo
from db.session import session_scope
from embedding.config import get_settings
from embedding.hub import ensure_under_roots
from embedding.specs import get_spec
from embedding.validation import CheckResult

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


class JobCancelled(Exception):
    """The job was cancelled; training stopped at a batch boundary."""


class JobHeldElsewhere(Exception):
    """Another live worker holds the job's lease; this delivery should come back later."""


def checked_model_name(name: str) -> str:
    """A model named in a task payload: a registered spec, or a folder under the allowed roots."""
    from embedding.specs import _registry

    if name in _registry:
        return name
    if "/" in name or name.startswith("."):
        candidate = Path(name)
        if candidate.exists() or name.startswith((".", "/", "~")):
            return str(ensure_under_roots(candidate, get_settings().model_roots))
    get_spec(name)  # raises UnknownModel with a clear message
    return name


def with_db_retry(action: Callable[[], Any], what: str, deadline_s: float = 180.0) -> Any:
    """Run a database write, retrying with exponential backoff while the database is away.

    A fine-tune epoch is minutes of work: a database restart must delay its record, not
    lose it. Only connection-level errors are retried; a bad value fails at once.
    """
    from sqlalchemy.exc import DBAPIError, OperationalError

    delay, waited = 0.5, 0.0
    while True:
        try:
            return action()
        except (OperationalError, DBAPIError) as exc:
            transient = isinstance(exc, OperationalError) or exc.connection_invalidated
            if not transient or waited >= deadline_s:
                raise
            log.warning(
                "%s: database unavailable (%s); retrying in %.1f s",
                what,
                type(exc.orig).__name__,
                delay,
            )
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 10.0)


def job_dir(job_id: str) -> Path:
    return Path(get_settings().artifacts_dir) / "jobs" / str(job_id)


# ------------------------------------------------------------------ fine-tune
def run_finetune_job(
    job_id: str,
    hostname: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Claim and run one job. A job that is not ours to run is left alone."""
    from workers.schemas import FinetuneRequest

    settings = get_settings()
    with session_scope() as session:
        job = repo.get_job(session, job_id)
        if job is None:
            raise LookupError(f"no fine-tune job {job_id}")
        if job.status in ("succeeded", "failed", "cancelled"):
            return {"job_id": str(job_id), "status": job.status, "duplicate": True}
        if job.status == "running" and job.attempts >= settings.job_max_attempts and _stale(job):
            reason = (
                f"gave up after {job.attempts} attempts: the worker running it was lost each time "
                f"(last: {job.worker})"
            )
            repo.finish_job(session, job_id, "failed", error=reason)
            return {"job_id": str(job_id), "status": "failed", "error": reason}
        claimed = repo.claim_job(
            session,
            job_id,
            hostname,
            allow_reclaim_running=True,
            stale_after_s=settings.job_lease_s,
        )
        if not claimed:
            if repo.get_job(session, job_id).status == "running":
                raise JobHeldElsewhere(job_id)
            return {"job_id": str(job_id), "status": job.status, "duplicate": True}
        params = dict(job.params)
        model = job.model
    try:
        request = FinetuneRequest.model_validate({**params, "model": model})
        with lease_kept(job_id):
            result = _train(job_id, request, progress)
    except JobCancelled:
        with session_scope() as session:
            repo.finish_job(session, job_id, "cancelled", error="cancelled by request")
        return {"job_id": str(job_id), "status": "cancelled"}
    except Exception as exc:
        fail_job(job_id, f"{type(exc).__name__}: {exc}")
        raise
    return result


@contextmanager
def lease_kept(job_id: str) -> Iterator[None]:
    """Refresh the job's lease from a background thread for as long as this worker runs it.

    A thread, not the training loop, so that loading the model, evaluating and exporting
    (minutes on a large model) never let the lease lapse while the worker is alive. A dead
    worker stops heartbeating and its job can be taken over after ``job_lease_s``.
    """
    stop = threading.Event()
    interval = max(0.2, get_settings().job_lease_s / 4)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with session_scope() as session:
                    repo.heartbeat(session, job_id)
            except Exception as exc:  # a database blip: try again next beat
                log.warning("heartbeat for job %s failed: %s", job_id, type(exc).__name__)

    thread = threading.Thread(target=beat, name=f"lease-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _train(job_id: str, request: Any, progress: Progress | None) -> dict[str, Any]:
    from embedding import training
    from embedding.data import load_examples

    out = job_dir(job_id)
    if request.dataset is not None:
        path = ensure_under_roots(request.dataset, get_settings().model_roots)
        examples = load_examples(path)
    elif request.triplets is not None:
        examples = [(t.anchor, t.positive, t.negative) for t in request.triplets]
    else:
        examples = [(p.anchor, p.positive) for p in request.pairs]
    last_check = [0.0]

    def should_stop() -> bool:
        now = time.monotonic()
        if now - last_check[0] < 1.0:  # one cheap query a second at most
            return False
        last_check[0] = now
        try:
            with session_scope() as session:
                return repo.is_cancel_requested(session, job_id)
        except Exception:  # the database is away: keep training, ask again later
            return False

    def on_epoch_end(stats: Any) -> None:
        if not math.isfinite(stats.loss):
            raise ValueError(f"epoch {stats.epoch}: loss is {stats.loss}")

        def write() -> None:
            with session_scope() as session:
                repo.record_epoch(
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

    config = training.TrainConfig(
        loss=request.loss,
        epochs=request.epochs,
        lr=request.lr,
        batch_size=request.batch_size,
        seed=request.seed,
        **({"margin": request.margin} if request.margin is not None else {}),
    )
    result = training.finetune(
        checked_model_name(request.model),
        examples,
        config,
        out_dir=out / "model",
        checkpoint_dir=out / "checkpoints",
        resume=True,
        on_epoch_end=on_epoch_end,
        should_stop=should_stop,
    )
    if getattr(result, "stopped", False):
        raise JobCancelled(job_id)
    model_path = Path(result.output_dir)
    digest = weights_sha256(model_path)

    def register() -> int:
        with session_scope() as session:
            version = repo.register_model_version(
                session,
                name=f"{request.model}-ft",
                base_model=request.model,
                path=str(model_path),
                weights_sha256=digest,
                metrics={"eval_before": result.eval_before, "eval_after": result.eval_after},
            )
            repo.finish_job(session, job_id, "succeeded", model_version_id=version.id)
            return version.version

    version_number = with_db_retry(register, f"job {job_id} model version")
    return {
        "job_id": str(job_id),
        "status": "succeeded",
        "model_path": str(model_path),
        "model_version": version_number,
        "epoch_losses": list(result.epoch_losses),
    }


def _stale(job: Any) -> bool:
    from db.models import utcnow

    beat = job.heartbeat_at
    return beat is None or (utcnow() - beat).total_seconds() >= get_settings().job_lease_s


def fail_job(job_id: str, reason: str) -> None:
    with session_scope() as session:
        repo.finish_job(session, job_id, "failed", error=reason[:4000])


def weights_sha256(folder: Path) -> str:
    """sha256 over the folder's safetensors files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        with path.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------ benchmark
def run_and_record_benchmark(model: str, iterations: int, batch_size: int) -> dict[str, Any]:
    from embedding.bench import benchmark_encoder
    from workers.model_cache import model_cache

    figures = benchmark_encoder(
        model_cache().get(model), iterations=iterations, batch_size=batch_size
    )
    record_benchmark(figures.to_dict())
    return figures.to_dict()


def record_benchmark(figures: dict[str, Any]) -> None:
    from embedding import __version__

    lat = figures["latency"]
    with session_scope() as session:
        repo.add_benchmark_result(
            session,
            model=figures["model"],
            device=figures["device"],
            precision=figures["precision"],
            batch_size=figures["batch_size"],
            latency_p50_ms=lat["p50_ms"],
            latency_p95_ms=lat["p95_ms"],
            latency_p99_ms=lat["p99_ms"],
            latency_mean_ms=lat["mean_ms"],
            latency_min_ms=lat["min_ms"],
            latency_max_ms=lat["max_ms"],
            throughput_per_s=figures["throughput_per_s"],
            grad_step_ms=figures.get("grad_step_ms"),
            optimizer_step_ms=figures.get("optimizer_step_ms"),
            peak_memory_mb=figures["peak_memory_mb"],
            package_version=__version__,
            host=figures["host"],
        )


def record_benchmark_from_check(result: CheckResult) -> None:
    """The benchmark check's figures also go to ``benchmark_results`` (the trend)."""
    if result.status in ("error", "unavailable") or "latency" not in result.figures:
        return
    figures = dict(result.figures)
    gradient = figures.get("gradient") or {}
    figures["grad_step_ms"] = gradient.get("forward_backward_ms")
    figures["optimizer_step_ms"] = gradient.get("optimizer_ms")
    record_benchmark(figures)


# ----------------------------------------------------------------- validation
def record_check(run_id: str, result: CheckResult) -> dict[str, Any]:
    data = result.to_dict()
    with session_scope() as session:
        repo.record_validation_check(
            session,
            run_id,
            name=result.name,
            status=result.status,
            figures={**data["figures"], "reason": result.reason},
            criteria=data["criteria"],
            duration_s=result.duration_s,
        )
    return data


def summarize_run(run_id: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    checks = [CheckResult.from_dict(r) for r in results]
    failed = [c.name for c in checks if c.status != "passed"]
    status = (
        "passed"
        if not failed
        else ("error" if any(c.status == "error" for c in checks) else "failed")
    )
    verdict = (
        f"all {len(checks)} checks passed"
        if not failed
        else f"{len(failed)} of {len(checks)} checks did not pass: "
        + ", ".join(f"{c.name} ({c.status})" for c in checks if c.status != "passed")
    )
    with session_scope() as session:
        repo.finish_validation_run(session, run_id, status, verdict)
    return {"run_id": str(run_id), "status": status, "verdict": verdict, "checks": results}


def error_run(run_id: str, reason: str) -> None:
    with session_scope() as session:
        repo.finish_validation_run(session, run_id, "error", f"error: {reason}", error=reason)

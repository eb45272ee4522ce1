"""The Celery tasks: parse the JSON payload, call the core, write through ``db/``.

Each task is thin on purpose; the logic lives in ``embedding/`` (ML), ``db/repo.py``
(persistence) and the life-cycle modules beside this one — ``finetune_job``, ``outbox``,
``validation_run``, ``benchmark_record`` — so all of it is testable without a broker.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_received

from core.config import get_settings
from db.repo.scope import DEFAULT_PROJECT
from workers.app import app
from workers.fleet.dispatch import dispatch
from workers.jobs import evaluation_run, finetune_job, validation_run
from workers.jobs.outbox import relay_unsent, submit_request
from workers.lifeline import duties as lifeline
from workers.reports.benchmark_record import record_benchmark_from_check, run_and_record_benchmark
from workers.schemas import (
    BenchmarkRequest,
    CompareRequest,
    EmbedRequest,
    FinetuneRequest,
    LoadModelRequest,
    PayloadError,
    parse,
)
from workers.serving import embed_service
from workers.serving.model_cache import model_cache
from workers.serving.model_names import checked_model_name
from workers.tenancy import scope_of

log = logging.getLogger(__name__)

# A validation run's lease is taken as its check message is received (before the ack).
task_received.connect(validation_run.beat_on_receipt, weak=False)


# ------------------------------------------------------------- model tasks
@app.task(name="embedding.load_model")
def load_model(**payload: Any) -> dict[str, Any]:
    """Load (or find in this worker's cache) a model; return its LoadReport."""
    request = parse(LoadModelRequest, payload)
    encoder = model_cache().get(checked_model_name(request.model, scope=DEFAULT_PROJECT))
    return {"model": request.model, "reports": [r.to_dict() for r in encoder.load_reports]}


class EmbedTask(Task):
    """The reply is a matrix of floats: Celery's "succeeded" log line must not print it
    (``resultrepr_maxsize`` cuts the reply's repr to its head); the task logs its size and
    time itself (:func:`workers.serving.embed_service.embed`).

    No STARTED state: a task that lasts a batch (a few hundred ms) gains nothing from it,
    and storing it costs two more Redis round trips per request, CPU that on 2 cores comes
    out of the encoder's share. (Measured with 32 single-text ``send_task`` clients:
    without it and without extended results, +7-10 % texts/s in paired runs, about this
    machine's run-to-run noise; not a large effect, but a free one.)"""

    resultrepr_maxsize = 64
    track_started = False


@app.task(name="embedding.embed", base=EmbedTask)
def embed(**payload: Any) -> dict[str, Any]:
    """Embed texts, rows in input order: JSON lists, or a base64 float32 matrix on request.

    Batched with concurrent requests for the same model and settings, and cached
    (:mod:`workers.serving.embed_service`); ``"cache": false`` in the payload skips the cache.
    """
    request = parse(EmbedRequest, payload)
    name = checked_model_name(
        request.model or get_settings().default_model, scope=scope_of(request.project)
    )
    reply = embed_service.embed(request, name)
    vectors = reply.pop("vectors")
    if request.encoding == "base64":
        import base64

        import numpy as np

        raw = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
        return {**reply, "encoding": "base64", "vectors_b64": base64.b64encode(raw).decode("ascii")}
    return {**reply, "encoding": "json", "vectors": json_vectors(vectors)}


def json_vectors(vectors: Any) -> list[list[float]]:
    """Rows as lists of floats rounded to 9 decimals.

    A float32 widened to float64 prints 17 digits, and printing them is most of the cost of a
    JSON reply (512 x 384 vectors: 0.19 s to dump, 4.3 MB). Nine decimals are 3x faster to
    dump and 40 % smaller, and the rounding (at most 5e-10) is far below the model's own
    noise (bf16 inference differs from fp32 by ~1e-3 per component). ``encoding="base64"``
    is the bit-exact float32 alternative.
    """
    import numpy as np

    return np.round(np.asarray(vectors, dtype=np.float64), 9).tolist()


@app.task(name="embedding.torch_threads")
def torch_threads() -> dict[str, Any]:
    """The torch thread counts of the pool that ran this (send it to a queue by name): each
    pool has its own (``EMBEDDING_TORCH_THREADS_<POOL>``, ``embedding.inference.torch_threads``);
    and whether it tokenizes on every core (``workers.pool_threads.parallel_tokenizing``)."""
    import os
    import socket

    from embedding.inference.torch_threads import current

    parallel = os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("1", "true")
    return {"host": socket.gethostname(), **current(), "tokenizers_parallel": parallel}


@app.task(name="embedding.worker_device")
def worker_device(hold_s: float = 0.0) -> dict[str, Any]:
    """Which device the gpu pool child that ran this owns (``workers.devices``): its pool
    index, device and pid. ``hold_s`` (at most 30) keeps the child busy that long, so that
    several sent at once land on several children."""
    import socket
    import time

    from workers.devices import current

    started_at = time.time()  # after its device's lock: a group holding it delays this
    time.sleep(min(max(float(hold_s), 0.0), 30.0))
    return {"host": socket.gethostname(), "started_at": started_at, **current().as_dict()}


@app.task(name="embedding.benchmark")
def benchmark(**payload: Any) -> dict[str, Any]:
    """Benchmark a model and record a ``benchmark_results`` row."""
    request = parse(BenchmarkRequest, payload)
    return run_and_record_benchmark(
        checked_model_name(request.model, scope=DEFAULT_PROJECT),
        request.iterations,
        request.batch_size,
    )


@app.task(name="embedding.compare")
def compare(**payload: Any) -> dict[str, Any]:
    """A/B comparison of two models on (query, document) pairs (:mod:`embedding.evaluation.compare`).

    ``send_task("embedding.compare", kwargs={...})`` with the schema of
    :class:`workers.schemas.CompareRequest`. Returns the evaluation as JSON
    (``workers.jobs.evaluation_run.read``): ``succeeded`` with both models' metrics, the
    differences B - A with their 95 % intervals and the verdict, or ``failed`` with the
    reason. A request refused before anything is recorded returns ``{"evaluation_id": null,
    "status": "rejected", "error": ...}``.
    """
    from embedding.models.hub import PathNotAllowed
    from embedding.models.specs import UnknownModel
    from workers.jobs.submit_checks import DatasetNotFound

    try:
        request = parse(CompareRequest, payload)
        return evaluation_run.run_request(request, load=model_cache().get)
    except (
        PayloadError,
        UnknownModel,
        PathNotAllowed,
        DatasetNotFound,
        evaluation_run.EvaluationRefused,
    ) as exc:
        return {
            "evaluation_id": None,
            "status": "rejected",
            "error": f"{type(exc).__name__}: {exc}",
        }


# ---------------------------------------------------------- fine-tune tasks
class FinetuneTask(Task):
    """Late ack: a worker killed mid-job leaves the message to be redelivered and resumed.

    No retry limit: a delivery held off by a live lease comes back every lease until the
    job is done or its worker is gone (Celery's default of 3 retries would end a duplicate
    of any job longer than three leases in ``MaxRetriesExceededError``; ``retry(max_retries=
    None)`` does not lift it, only this attribute does).
    """

    acks_late = True
    reject_on_worker_lost = True
    max_retries = None


@app.task(
    name="embedding.finetune",
    base=FinetuneTask,
    bind=True,
    soft_time_limit=get_settings().finetune_soft_time_limit,
    time_limit=get_settings().finetune_hard_time_limit,
)
def finetune(self: Task, job_id: str) -> dict[str, Any]:
    """Run (or resume) the fine-tune job ``job_id``: claim, train, record, register."""

    def progress(meta: dict[str, Any]) -> None:
        if not self.request.id:  # also called eagerly in tests, without a task id
            return
        try:  # best effort: the epochs are in the database; a broker blip must not fail the job
            self.update_state(state="PROGRESS", meta=meta)
            # Flower keeps an event's fields on its task but lists only Celery's own
            # (``result`` among them) in /api/tasks: the meta rides there as ``result``
            # until task-succeeded replaces it with the return value's repr.
            self.send_event("task-progress", result=meta, **meta)
        except Exception as exc:
            log.warning("progress for job %s not reported: %s", job_id, type(exc).__name__)

    try:
        return finetune_job.run_finetune_job(
            job_id, hostname=self.request.hostname or "local", progress=progress
        )
    except finetune_job.JobHeldElsewhere as held:
        # A live worker holds the lease (a duplicate delivery, or our own crash a moment
        # ago): come back after the lease, and run it then only if its worker is gone.
        raise self.retry(countdown=get_settings().job_lease_s) from held
    except SoftTimeLimitExceeded:
        finetune_job.fail_job(job_id, "soft time limit exceeded")
        raise
    finally:
        next_in_fair_share_order()


def next_in_fair_share_order() -> None:
    """A gpu slot is free (its job ended, or was not ours to run): send the next job in
    fair-share order. Best effort: the beat's relay pass sends it otherwise."""
    try:
        dispatch()
    except Exception as exc:
        log.warning("dispatch after a job: %s (the relay pass will send)", type(exc).__name__)


@app.task(name="embedding.finetune_request")
def finetune_request(**payload: Any) -> dict[str, Any]:
    """For services in other languages: validate a JSON request, record the job, start it.

    ``send_task("embedding.finetune_request", kwargs={...})`` with the schema of
    :class:`workers.schemas.FinetuneRequest`. Returns ``{"job_id": ..., "status": ...}``
    with the job's current status (a repeated request may find it finished); a request
    that is refused records nothing and returns ``{"job_id": null, "status": "rejected",
    "error": ...}``; a key already used with another request returns ``{"job_id": <that
    job>, "status": "conflict", "error": ...}``.
    """
    from embedding.models.hub import PathNotAllowed
    from embedding.models.specs import UnknownModel
    from workers.fleet.quotas import QuotaExceeded
    from workers.jobs.idempotency import IdempotencyConflict
    from workers.jobs.submit_checks import DatasetNotFound

    try:
        submitted = submit_request(parse(FinetuneRequest, payload))
    except IdempotencyConflict as exc:
        return {"job_id": exc.job_id, "status": "conflict", "error": str(exc)}
    except QuotaExceeded as exc:
        return {
            "job_id": None,
            "status": "rejected",
            "error": f"QuotaExceeded: {exc}",
            "retry_after_s": exc.retry_after_s,
        }
    except (PayloadError, UnknownModel, PathNotAllowed, DatasetNotFound) as exc:
        return {"job_id": None, "status": "rejected", "error": f"{type(exc).__name__}: {exc}"}
    return {"job_id": submitted.job_id, "status": submitted.status}


@app.task(name="embedding.build_dataset")
def build_dataset(**payload: Any) -> dict[str, Any]:
    """For other services: code-search pairs from a codebase, registered as fine-tune files.

    ``send_task("embedding.build_dataset", kwargs={"folder": <under the model roots>})`` (or
    ``"archive"``: a zip or tar under them; ``"eval_share"``, default 0.1). Returns
    ``{"training_file", "validation_file", "report"}`` (the ids go to a fine-tuning job), or
    ``{"error": {"message", "code", "status", "param"}}`` for bad input, with nothing left
    behind. See ``workers/jobs/dataset_build.py``.
    """
    from workers.jobs.dataset_build import DatasetBuildError
    from workers.jobs.dataset_build import build_dataset as build

    unknown = set(payload) - {"folder", "archive", "eval_share", "project"}
    if unknown:
        return {
            "error": DatasetBuildError(
                f"unknown field(s) {sorted(unknown)}", "invalid_value"
            ).as_dict()
        }
    try:
        return build(**payload)
    except DatasetBuildError as exc:
        return {"error": exc.as_dict()}


@app.task(name="embedding.job_status")
def job_status(job_id: str) -> dict[str, Any]:
    """A job as JSON (``workers.client.job_status``), for clients that have only Celery;
    an unknown id gives ``{"id": ..., "status": "not_found", "error": ...}``."""
    from workers.client import job_status as read

    try:
        return read(job_id)
    except (LookupError, ValueError) as exc:
        return {"id": job_id, "status": "not_found", "error": str(exc)}


@app.task(name="embedding.cancel_job")
def cancel_job(job_id: str) -> dict[str, Any]:
    """Cancel a job (``workers.client.cancel_job``): a queued job is cancelled at once, a
    running one stops at its next batch. Returns the job as JSON, as ``embedding.job_status``.
    A plain ``revoke`` of the job's task cannot stop a running job (Celery does not interrupt
    a running task without ``terminate``, which would kill the whole pool child): use this."""
    from workers.client import cancel_job as cancel

    try:
        return cancel(job_id)
    except (LookupError, ValueError) as exc:
        return {"id": job_id, "status": "not_found", "error": str(exc)}


@app.task(name="embedding.relay_outbox")
def relay_outbox() -> int:
    """Send every job still unsent (the outbox); returns how many were sent."""
    return relay_unsent()


@app.task(name="embedding.rescue_jobs")
def rescue_jobs() -> dict[str, int]:
    """The lifeline pass: re-send lost jobs, fail those past the attempts cap."""
    return lifeline.rescue()


# --------------------------------------------------------- validation chord
# The checks (and the load and benchmark tasks) read version names in the default project:
# the API passes the names of another project already resolved to what they load.
@app.task(name="embedding.check_model_loading")
def check_model_loading(run_id: str, models: list[str]) -> dict[str, Any]:
    from embedding.validation import check_model_loading as check

    return validation_run.run_check(
        run_id,
        "model_loading",
        lambda: check([checked_model_name(m, scope=DEFAULT_PROJECT) for m in models]),
    )


@app.task(name="embedding.check_inference_quality")
def check_inference_quality(run_id: str, model: str) -> dict[str, Any]:
    from embedding.validation import check_inference_quality as check

    return validation_run.run_check(
        run_id,
        "inference_quality",
        lambda: check(checked_model_name(model, scope=DEFAULT_PROJECT), load=model_cache().get),
    )


@app.task(name="embedding.check_convergence")
def check_convergence(run_id: str, model: str) -> dict[str, Any]:
    from embedding.validation import check_convergence as check

    return validation_run.run_check(
        run_id, "convergence", lambda: check(checked_model_name(model, scope=DEFAULT_PROJECT))
    )


@app.task(name="embedding.run_benchmark")
def run_benchmark(run_id: str, model: str) -> dict[str, Any]:
    from embedding.validation import check_benchmark as check

    def measure() -> Any:
        result = check(checked_model_name(model, scope=DEFAULT_PROJECT), load=model_cache().get)
        record_benchmark_from_check(result)
        return result

    return validation_run.run_check(run_id, "benchmark", measure)


@app.task(name="embedding.summarize_validation")
def summarize_validation(results: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    """The chord callback: every check has reported; set the run's verdict."""
    return validation_run.summarize_run(run_id, results)


@app.task(name="embedding.validation_failed")
def validation_failed(
    request: Any = None, exc: Any = None, traceback: Any = None, run_id: str = ""
) -> None:
    """The chord's errback: a check task died (not a failed criterion); end the run as error."""
    validation_run.error_run(run_id, f"a check task died: {exc!r}")

"""How an A/B evaluation is recorded and run, from its row to its verdict, and read back.

An evaluation is one ``evaluations`` row. :func:`create` records it (``queued``) with the
model names as given and the data's name. :func:`run` then:

1. resolves each name, the caller's way (the CLI's ``local_model_name``, a worker's
   ``checked_model_name``),
2. reads the data (pairs only, validated),
3. claims the row (``running``, with what each name loaded and the data's sha256 and rows),
4. compares (:func:`embedding.evaluation.compare.compare_encoders`) and records both models' metrics,
   the differences B - A with their intervals, and the verdict (``succeeded``).

Any error on the way ends the row ``failed`` with its reason, so no evaluation is left
``running`` by a failure. :func:`read` gives the row as JSON types: the shape the CLI
prints, the task returns and the API answers from.

The CLI runs all of this in its own process; the ``embedding.compare`` task runs it on a
worker (:func:`run_request`), after the API or the client recorded the row
(:func:`workers.client.start_evaluation`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import repo
from db.models import DEFAULT_PROJECT_ID
from db.session import session_scope
from embedding.data.examples import load_examples
from embedding.evaluation.compare import PRIMARY_METRIC, check_pairs, compare_encoders
from workers.jobs.submit_checks import checked_dataset
from workers.lifeline.leases import lease
from workers.schemas import CompareRequest
from workers.serving.model_names import checked_model_name, find_version
from workers.tenancy import project_id_of


class EvaluationRefused(ValueError):
    """A task payload naming an evaluation that does not exist, or another request's one."""


@dataclass(frozen=True)
class PairsData:
    """(query, document) pairs, validated, with the sha256 of the data as it was read."""

    rows: list[tuple[str, str]]
    sha256: str


def pairs_from_file(path: str | Path) -> PairsData:
    """The pairs of a JSONL file (errors name the line; triplets refused) and the sha256 of
    its bytes (what ``sha256sum`` prints)."""
    rows = check_pairs(load_examples(path), where=f"{path} row")
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return PairsData(rows, digest.hexdigest())


def pairs_inline(pairs: Sequence[Sequence[str]]) -> PairsData:
    """Pairs given in a payload; the digest is that of the JSONL ``embedding.data.examples.write_examples``
    writes for them, so the same pairs saved to a file that way have the same digest."""
    rows = check_pairs(pairs)
    text = "".join(json.dumps({"anchor": q, "positive": d}) + "\n" for q, d in rows)
    return PairsData(rows, hashlib.sha256(text.encode("utf-8")).hexdigest())


def create(
    trigger: str,
    model_a: str,
    model_b: str,
    data_name: str,
    n_resamples: int,
    seed: int,
    dataset: str | None = None,
    project_id: str = DEFAULT_PROJECT_ID,
) -> str:
    """Record an evaluation to run (``queued``) in ``project_id``; returns its id.
    ``dataset``: the path a worker reads, kept so that the lifeline can run it again if its
    worker is lost."""
    with session_scope() as session:
        row = repo.evaluations.create_evaluation(
            session,
            project_id=project_id,
            trigger=trigger,
            model_a=model_a,
            model_b=model_b,
            data_name=data_name,
            n_resamples=n_resamples,
            seed=seed,
            primary_metric=PRIMARY_METRIC,
            dataset=dataset,
        )
        return str(row.id)


def fail(evaluation_id: str, reason: str) -> None:
    with session_scope() as session:
        repo.evaluations.fail_evaluation(session, evaluation_id, reason[:4000] or "failed")


def run(
    evaluation_id: str,
    data: Callable[[], PairsData],
    resolve: Callable[[str], str],
    load: Callable[[str], Any],
) -> dict[str, Any]:
    """Run a ``queued`` evaluation to its end and return it (:func:`read`).

    An evaluation that is not ``queued`` (run already, or running elsewhere) is returned as
    it is. On any error the row is ``failed`` with the reason, and the error is raised.
    """
    with session_scope() as session:
        row = repo.evaluations.get_evaluation(session, evaluation_id, scope=repo.ALL_PROJECTS)
        if row is None:
            raise EvaluationRefused(f"no evaluation {evaluation_id}")
        status, names = row.status, (row.model_a, row.model_b)
        scope = repo.scope.project(row.project_id)
        n_resamples, seed = row.n_resamples, row.seed
    if status != "queued":
        return read(evaluation_id, scope=repo.ALL_PROJECTS)
    started = time.perf_counter()
    try:
        loaded = [resolve(name) for name in names]
        pairs = data()
        with session_scope() as session:
            claimed = repo.evaluations.start_evaluation(
                session,
                evaluation_id,
                model_a_loaded=loaded[0],
                model_b_loaded=loaded[1],
                data_sha256=pairs.sha256,
                data_rows=len(pairs.rows),
                model_a_version=_version(names[0], loaded[0], scope),
                model_b_version=_version(names[1], loaded[1], scope),
            )
        if not claimed:
            return read(evaluation_id, scope=repo.ALL_PROJECTS)
        beat = functools.partial(repo.evaluations.beat_evaluation, evaluation_id=evaluation_id)
        with lease(f"evaluation {evaluation_id}", beat):
            encoder_a = load(loaded[0])
            encoder_b = load(loaded[1])
            comparison = compare_encoders(
                encoder_a, encoder_b, pairs.rows, n_resamples=n_resamples, seed=seed
            )
        with session_scope() as session:
            repo.evaluations.finish_evaluation(
                session,
                evaluation_id,
                metrics_a=comparison.metrics_a,
                metrics_b=comparison.metrics_b,
                differences={k: v.to_dict() for k, v in comparison.differences.items()},
                verdict=comparison.verdict,
                duration_s=time.perf_counter() - started,
            )
    except BaseException as exc:  # an interrupted CLI run must not stay "running" either
        fail(evaluation_id, f"{type(exc).__name__}: {exc}")
        raise
    return read(evaluation_id, scope=repo.ALL_PROJECTS)


def _version(name: str, loaded: str, scope: repo.Scope) -> str | None:
    """``name:N`` when ``name`` was a registered version (and resolved to its folder)."""
    found = find_version(name, scope=scope)
    return f"{found.name}:{found.version}" if found and found.path == loaded else None


def check_request(request: CompareRequest, scope: repo.Scope) -> None:
    """Raise ``UnknownModel``, ``PathNotAllowed`` or ``DatasetNotFound`` for a request that
    names what the workers may not or cannot use, before anything is recorded."""
    checked_model_name(request.model_a, scope=scope)
    checked_model_name(request.model_b, scope=scope)
    if request.dataset is not None:
        checked_dataset(request.dataset)


def run_request(request: CompareRequest, load: Callable[[str], Any]) -> dict[str, Any]:
    """What the ``embedding.compare`` task does: run the evaluation the request names (or
    record one, trigger ``task``), on the worker's side of the world (names and dataset
    under the roots). A failure of the run is in the returned row (``failed``, with its
    reason); a request refused before any row exists raises."""
    if request.evaluation_id is None:
        project_id = project_id_of(request.project)
        check_request(request, repo.scope.project(project_id))
        data_name = request.dataset if request.dataset is not None else "inline"
        evaluation_id = create(
            "task",
            request.model_a,
            request.model_b,
            data_name,
            request.n_resamples,
            request.seed,
            dataset=request.dataset,
            project_id=project_id,
        )
    else:
        evaluation_id = request.evaluation_id
        project_id = _check_recorded(request)
    scope = repo.scope.project(project_id)

    def data() -> PairsData:
        if request.dataset is not None:
            return pairs_from_file(checked_dataset(request.dataset))
        return pairs_inline([(p.anchor, p.positive) for p in request.pairs or []])

    try:
        resolve = functools.partial(checked_model_name, scope=scope)
        return run(evaluation_id, data, resolve=resolve, load=load)
    except Exception:
        return read(evaluation_id, scope=repo.ALL_PROJECTS)  # failed, with the reason


def _check_recorded(request: CompareRequest) -> str:
    """The recorded evaluation's project, once its record matches the request."""
    with session_scope() as session:
        row = repo.evaluations.get_evaluation(
            session, request.evaluation_id or "", scope=repo.ALL_PROJECTS
        )
        if row is None:
            raise EvaluationRefused(f"no evaluation {request.evaluation_id}")
        recorded = (row.model_a, row.model_b, row.n_resamples, row.seed)
        project_id = row.project_id
    asked = (request.model_a, request.model_b, request.n_resamples, request.seed)
    if recorded != asked:
        raise EvaluationRefused(
            f"evaluation {request.evaluation_id} was recorded for {recorded} "
            f"(model_a, model_b, n_resamples, seed), not {asked}"
        )
    return project_id


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def to_dict(row: Any) -> dict[str, Any]:
    """An evaluation row as JSON types."""
    return {
        "id": str(row.id),
        "status": row.status,
        "trigger": row.trigger,
        "model_a": {
            "name": row.model_a,
            "loaded": row.model_a_loaded,
            "version": row.model_a_version,
        },
        "model_b": {
            "name": row.model_b,
            "loaded": row.model_b_loaded,
            "version": row.model_b_version,
        },
        "data": {"name": row.data_name, "sha256": row.data_sha256, "rows": row.data_rows},
        "n_resamples": row.n_resamples,
        "seed": row.seed,
        "primary_metric": row.primary_metric,
        "metrics_a": row.metrics_a,
        "metrics_b": row.metrics_b,
        "differences": row.differences,
        "verdict": row.verdict,
        "error": row.error,
        "duration_s": row.duration_s,
        "attempts": row.attempts,
        "rescues": list(row.rescues or []),
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
    }


def read(evaluation_id: str, *, scope: repo.Scope) -> dict[str, Any]:
    """One evaluation as JSON types; ``LookupError`` for an id unknown in ``scope``."""
    with session_scope() as session:
        row = repo.evaluations.get_evaluation(session, evaluation_id, scope=scope)
        if row is None:
            raise LookupError(f"no evaluation {evaluation_id}")
        return to_dict(row)


def recent(limit: int = 10, *, scope: repo.Scope) -> list[dict[str, Any]]:
    """The newest evaluations first."""
    with session_scope() as session:
        rows = repo.evaluations.list_evaluations(session, limit=limit, scope=scope)
        return [to_dict(row) for row in rows]

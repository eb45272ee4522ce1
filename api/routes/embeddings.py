"""``POST /v1/embeddings``: OpenAI's embeddings call, computed by the workers.

Each request is held to its project's rate limits (:mod:`api.rate_limits`: requests and
tokens per minute, read from the project's row) and recorded in its usage of the day
(``usage_daily``: one request, its tokens, and its share of the worker's compute time).
"""

from __future__ import annotations

import base64
import logging

import numpy as np
from fastapi import APIRouter, Depends, Request, Response

from api import embedder, model_ids, rate_limits
from api.auth import CallerDep, authenticate
from api.schemas import Embedding, EmbeddingRequest, EmbeddingResponse, Usage
from db import repo
from db.session import session_scope
from workers.serving.embed_batching import estimated_tokens

log = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(authenticate)], tags=["embeddings"])


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
def create_embeddings(
    caller: CallerDep, body: EmbeddingRequest, request: Request, response: Response
) -> EmbeddingResponse:
    """A fine-tuned model is named in the caller's project only; the embedding cache is
    keyed by the folder a name resolves to, so a project reaches only its own models'
    cached vectors."""
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    project_id = caller.write_project
    admission = _admit(request, project_id, texts)
    model = model_ids.resolve(body.model, scope=caller.scope)
    truncate_dim = model_ids.check_dimensions(model, body.dimensions)
    reply = embedder.embed(texts, model.load, truncate_dim, cache=body.cache)
    matrix = reply["matrix"]
    data = [
        Embedding(index=i, embedding=_encode(row, body.encoding_format))
        for i, row in enumerate(matrix)
    ]
    tokens = int(sum(reply.get("tokens") or []))
    response.headers.update(rate_limits.charge(admission, tokens))
    _record_usage(project_id, tokens, float(reply.get("compute_s") or 0.0))
    return EmbeddingResponse(
        data=data, model=body.model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
    )


def _admit(request: Request, project_id: str, texts: list[str]) -> rate_limits.Admission:
    """The project's limits, read now (a change holds from the next request), applied."""
    with session_scope() as session:
        project = repo.projects.find_project(session, project_id)
        rpm = project.embeddings_rpm if project is not None else None
        tpm = project.embeddings_tpm if project is not None else None
    try:
        return rate_limits.admit(project_id, rpm, tpm, estimated_tokens(texts))
    except rate_limits.RateLimited as refused:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.rate_limited.labels(project_id, refused.limit).inc()
        raise


def _record_usage(project_id: str, tokens: int, compute_s: float) -> None:
    """One upsert: the request, its tokens, its compute seconds. A database hiccup here
    loses this request's line of usage, never its answer."""
    try:
        with session_scope() as session:
            repo.usage.add(
                session,
                project_id,
                embedding_requests=1,
                tokens_embedded=tokens,
                gpu_seconds_embedding=compute_s,
            )
    except Exception as exc:
        log.warning("usage of %s not recorded (%s)", project_id, type(exc).__name__)


def _encode(row: np.ndarray, encoding_format: str) -> list[float] | str:
    """OpenAI's base64: the row's little-endian float32 bytes, base64 encoded."""
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in row]

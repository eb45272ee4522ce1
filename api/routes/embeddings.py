"""``POST /v1/embeddings``: OpenAI's embeddings call, computed by the workers."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends

from api import embedder, model_ids
from api.auth import CallerDep, authenticate
from api.schemas import Embedding, EmbeddingRequest, EmbeddingResponse, Usage

router = APIRouter(dependencies=[Depends(authenticate)], tags=["embeddings"])


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
def create_embeddings(caller: CallerDep, body: EmbeddingRequest) -> EmbeddingResponse:
    """A fine-tuned model is named in the caller's project only; the embedding cache is
    keyed by the folder a name resolves to, so a project reaches only its own models'
    cached vectors."""
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    model = model_ids.resolve(body.model, scope=caller.scope)
    truncate_dim = model_ids.check_dimensions(model, body.dimensions)
    reply = embedder.embed(texts, model.load, truncate_dim, cache=body.cache)
    matrix = reply["matrix"]
    data = [
        Embedding(index=i, embedding=_encode(row, body.encoding_format))
        for i, row in enumerate(matrix)
    ]
    tokens = int(sum(reply.get("tokens") or []))
    return EmbeddingResponse(
        data=data, model=body.model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
    )


def _encode(row: np.ndarray, encoding_format: str) -> list[float] | str:
    """OpenAI's base64: the row's little-endian float32 bytes, base64 encoded."""
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in row]

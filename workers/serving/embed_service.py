"""What ``embedding.embed`` does with a parsed request: cache, then the shared batch, then reply.

Texts found in the embedding cache skip the model; the rest go to this process's
:class:`~workers.serving.embed_batching.EmbedBatcher`, merged with whatever other requests with
the same model and settings are waiting, and the computed rows are written back to the
cache. The reply is this request's rows only, in its input order.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import numpy as np

from core.config import get_settings
from embedding.inference.device_profile import pass_profile
from embedding.inference.encoder import pick_device
from embedding.inference.pass_pool import PassPool
from workers.schemas import EmbedRequest
from workers.serving.embed_batching import BatchKey, EmbedBatcher
from workers.serving.embedding_cache import (
    Setting,
    embedding_cache,
    encoder_folders,
    encoder_precision,
    folder_fingerprint,
    model_version,
)
from workers.serving.model_cache import model_cache

log = logging.getLogger(__name__)

_batcher: EmbedBatcher | None = None
_batcher_lock = threading.Lock()
_pool: tuple[int, PassPool | None] | None = None  # (pid, pool): a forked child makes its own
_pool_lock = threading.Lock()
# The version of each loaded encoder, fixed when first seen: the weights in memory do not
# change when the files on disk do, so neither does the key their vectors are stored under.
_versions: dict[int, tuple[Any, str]] = {}
# Batches encoded at once on a GPU: two, so that one batch's tokenization overlaps the
# other's forward passes; more only contend for the GIL in front of one GPU.
GPU_RUNNERS = 2


def batcher() -> EmbedBatcher:
    global _batcher
    with _batcher_lock:
        if _batcher is None:
            settings = get_settings()
            # The pool first: making it briefly sets torch's process default to one thread,
            # and a runner started meanwhile would keep that (a 1-text batch runs in the
            # runner, on every core).
            pass_pool()
            on_gpu = worker_device().startswith("cuda")
            _batcher = EmbedBatcher(
                encode_batch,
                wait_s=settings.embed_batch_wait_ms / 1000.0,
                token_budget=pass_profile(worker_device()).encode_token_budget,
                max_texts=settings.max_texts_per_request,
                runners=GPU_RUNNERS if on_gpu else parallel_passes(),
            )
        return _batcher


def worker_device() -> str:
    """The device this process's models load on (``EMBEDDING_DEVICE``, auto: CUDA if any)."""
    return pick_device(get_settings().device)


def parallel_passes() -> int:
    """``EMBEDDING_EMBED_PASSES``, or one per torch thread of this pool: its share of the
    cores (``embedding.inference.torch_threads``; every core when the embed pool runs alone).

    On a GPU one pass at a time: it runs each pass across the whole device, and passes
    launched from several threads would only queue on it (and contend for the GIL).
    """
    import torch

    configured = get_settings().embed_passes
    if configured:
        return configured
    return 1 if worker_device().startswith("cuda") else torch.get_num_threads()


def pass_pool() -> PassPool | None:
    """The process's pool of single-threaded forward passes (None: one pass at a time)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            workers = parallel_passes()
            _pool = (os.getpid(), PassPool(workers) if workers > 1 else None)
        return _pool[1]


def encode_batch(key: BatchKey, texts: list[str]) -> tuple[np.ndarray, list[int]]:
    """The runner's call: one ``encode`` over every text of the batch."""
    encoder = model_cache().get(key.model)
    vectors, report = encoder.encode(
        texts,
        task=key.task,
        truncate_dim=key.truncate_dim,
        normalize=key.normalize,
        return_report=True,
        pool=pass_pool(),
    )
    return vectors, tokens_per_row(report)


def tokens_per_row(report: list[Any]) -> list[int]:
    """Tokens each text ran through the model (after truncation), for usage accounting.

    A combined model's report is one list per member: a text costs the sum over members.
    """
    if report and isinstance(report[0], list):
        return [sum(row) for row in zip(*(tokens_per_row(r) for r in report), strict=True)]
    return [int(item.tokens_used) for item in report]


def version_of(encoder: Any) -> str:
    known = _versions.get(id(encoder))
    if known is None or known[0] is not encoder:
        fingerprint = folder_fingerprint(encoder_folders(encoder))
        known = (encoder, model_version(fingerprint, encoder_precision(encoder)))
        _versions[id(encoder)] = known
    return known[1]


def embed(request: EmbedRequest, name: str) -> dict[str, Any]:
    """``{"model", "dim", "rows", "tokens", "precision", "model_version", "compute_s"}`` and
    the matrix."""
    started = time.perf_counter()
    encoder = model_cache().get(name)  # loads here on first use; a failure is this request's
    key = BatchKey(name, request.task, request.truncate_dim, request.normalize)
    setting = Setting(version_of(encoder), request.task, request.truncate_dim, request.normalize)
    cache = embedding_cache() if request.cache else None
    texts = request.texts
    found = cache.get_many(setting, texts) if cache else [None] * len(texts)
    missing = [i for i, f in enumerate(found) if f is None]
    dim = request.truncate_dim or encoder.dim
    vectors = np.empty((len(texts), dim), dtype=np.float32)
    tokens = [0] * len(texts)
    for i, hit in enumerate(found):
        if hit is not None:
            vectors[i], tokens[i] = hit
    batch_texts, compute_s = 0, 0.0
    if missing:
        todo = [texts[i] for i in missing]
        rows, counts, batch_texts, compute_s = batcher().submit(key, todo).result()
        vectors[missing] = rows
        for i, n in zip(missing, counts, strict=True):
            tokens[i] = int(n)
        if cache:
            cache.put_many(setting, todo, rows, counts)
    log.info(
        "embed %s: %d texts (%d cached) in a batch of %d texts, %.1f ms",
        name,
        len(texts),
        len(texts) - len(missing),
        batch_texts,
        (time.perf_counter() - started) * 1000,
    )
    return {  # rows and dim first: the head of the reply is what Celery's log line shows
        "rows": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "model": name,
        "tokens": tokens,
        "precision": encoder_precision(encoder),
        "model_version": setting.version,
        # This request's share of the encode time of the batch it ran in (cached texts
        # cost nothing): the API records it as the project's gpu_seconds_embedding.
        "compute_s": round(compute_s, 6),
        "vectors": vectors,
    }

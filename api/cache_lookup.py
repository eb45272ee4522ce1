"""The API's fast path: a request whose texts are all in the embedding cache needs no task.

The key needs the model version the workers computed it with: the fingerprint of the
model's files (read here from the same folders, which the API and the workers share) and
the precision the workers ran it in, which only a worker knows. So the API learns the
precision from a reply, and only when the version it computes from the files now equals
the one that reply carried; from then on it computes the version afresh for every request
(a few ``stat`` calls). New weights on disk give a new version at once, whose keys no
worker has written yet: a miss, never an old vector.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from workers.serving.embedding_cache import (
    Setting,
    embedding_cache,
    folder_fingerprint,
    model_version,
)

_precision: dict[str, str] = {}
_folders: dict[str, list[str]] = {}
_lock = threading.Lock()


def model_folders(load: str) -> list[str]:
    """The folders the workers load for ``load`` (one per member of a combined model)."""
    with _lock:
        known = _folders.get(load)
    if known is None:
        from embedding.models.hub import resolve
        from embedding.models.specs import get_spec

        spec = get_spec(load)
        members = [get_spec(m) for m in spec.members] if spec.source == "combined" else [spec]
        known = [str(resolve(m).folder) for m in members]
        with _lock:
            _folders[load] = known
    return known


def current_version(load: str, precision: str) -> str:
    return model_version(folder_fingerprint(model_folders(load)), precision)


def remember(load: str, reply: dict[str, Any]) -> None:
    """Learn the precision of ``load`` from a worker's reply whose version we can reproduce."""
    precision, version = reply.get("precision"), reply.get("model_version")
    if not precision or not version or _precision.get(load) == precision:
        return
    try:
        if current_version(load, precision) == version:
            _precision[load] = precision
    except Exception:  # a folder we cannot read here: no fast path for it
        return


def lookup(load: str, truncate_dim: int | None, texts: list[str]) -> dict[str, Any] | None:
    """Every text's row from the cache, or None (any miss: the request goes to a worker)."""
    cache = embedding_cache()
    precision = _precision.get(load)
    if cache is None or precision is None:
        return None
    setting = Setting(current_version(load, precision), None, truncate_dim, True)
    found = cache.get_many(setting, texts, count=False)
    if any(f is None for f in found):
        return None
    rows = [f[0] for f in found if f is not None]
    tokens = [f[1] for f in found if f is not None]
    cache.count(len(texts), 0, sum(4 + r.nbytes for r in rows))
    matrix = np.stack(rows)
    return {"rows": len(rows), "dim": int(matrix.shape[1]), "matrix": matrix, "tokens": tokens}

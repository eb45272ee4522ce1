"""A per-process cache of loaded encoders, bounded by count and by memory.

Models load lazily on first use, inside the worker child (never in the parent before a
fork, so CUDA is first touched after the fork). The least recently used model is evicted
when either bound would be passed; on CUDA the allocator cache is emptied after eviction.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from typing import Any

from core.config import get_settings


class ModelCache:
    def __init__(self, max_models: int, max_mb: float):
        if max_models < 1:
            raise ValueError("max_models must be >= 1")
        self.max_models = max_models
        self.max_mb = max_mb
        self._models: OrderedDict[tuple[str, str | None], Any] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _size_mb(encoder: Any) -> float:
        return float(sum(r.size_mb for r in encoder.load_reports))

    def get(self, name: str, precision: str | None = None) -> Any:
        """The loaded encoder for ``name``; loads it on first use, in ``precision`` or else the
        deployment's ``EMBEDDING_PRECISION`` (``auto``: the model's measured default)."""
        if precision is None and get_settings().precision != "auto":
            precision = get_settings().precision
        key = (name, precision)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            from embedding.inference.encoder import load_encoder

            encoder = load_encoder(name, device=get_settings().device, precision=precision)
            self._models[key] = encoder
            self._evict(keep=key)
            return encoder

    def _evict(self, keep: tuple[str, str | None]) -> None:
        evicted = False
        while len(self._models) > 1 and (
            len(self._models) > self.max_models or self.total_mb() > self.max_mb
        ):
            oldest = next(iter(self._models))
            if oldest == keep:
                break
            del self._models[oldest]
            evicted = True
        if evicted:
            gc.collect()
            _empty_cuda_cache()

    def total_mb(self) -> float:
        return sum(self._size_mb(m) for m in self._models.values())

    def names(self) -> list[str]:
        return [name for name, _ in self._models]

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
        gc.collect()
        _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    import sys

    torch = sys.modules.get("torch")  # never import torch (or touch CUDA) just to clean up
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


_cache: ModelCache | None = None


def model_cache() -> ModelCache:
    global _cache
    if _cache is None:
        settings = get_settings()
        _cache = ModelCache(settings.model_cache_max_models, settings.model_cache_max_mb)
    return _cache

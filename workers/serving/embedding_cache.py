"""The embedding cache: one vector per (model version, task, dimensions, normalize, text).

Keys are hashes of everything that decides the vector, so a hit can never be another
model's vector:

* the **model version** is a digest of the model's folders as loaded (path, and name,
  size and mtime of every weight and config file) and the precision the worker ran in.
  A fine-tune that registers a new version under the same base name writes new files (a
  new folder, or new mtimes in the old one), so its vectors get new keys; a worker still
  holding the old weights in memory keeps writing under the old version's key, never the
  new one;
* task (it picks the prompt and the adapter), ``truncate_dim``, ``normalize`` and the text.

Values are the float32 row (little-endian) after a 4-byte token count (usage accounting
must not change on a hit).

The cache lives in its own Redis (``EMBEDDING_CACHE_URL``), which must evict: Redis's
``maxmemory-policy`` is per server, not per database, so the cache is a server of its own
with ``allkeys-lru`` (docker-compose's ``cache`` service), and never the broker's database
(the broker's server runs ``noeviction``: evicting a queued task loses it). Hits, misses
and hit bytes are counted in a hash on the cache server, so the API's ``/metrics`` shows
them for the API and every worker at once.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.config import Settings, get_settings

log = logging.getLogger(__name__)

KEY_PREFIX = "emb:v1:"
STATS_KEY = "emb:stats"
# Files whose change means other vectors: weights (also per-task adapters), configs, tokenizer.
VERSION_GLOBS = ("**/*.safetensors", "**/*.json", "*.txt", "*.model")


class CacheOnBrokerDatabase(ValueError):
    """EMBEDDING_CACHE_URL names the broker's or the result backend's database."""


def folder_fingerprint(folders: Sequence[str | Path]) -> str:
    """A digest of the folders' model files as they are on disk now (stat only: cheap)."""
    digest = hashlib.sha256()
    for folder in folders:
        root = Path(folder)
        digest.update(str(root.resolve()).encode() + b"\0")
        files = sorted({p for pattern in VERSION_GLOBS for p in root.glob(pattern) if p.is_file()})
        for path in files:
            stat = path.stat()
            digest.update(
                f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode()
            )
    return digest.hexdigest()


def model_version(fingerprint: str, precision: str) -> str:
    """The version id in every key: the files' fingerprint and the precision the model ran."""
    return hashlib.sha256(f"{fingerprint}\0{precision}".encode()).hexdigest()[:32]


def encoder_folders(encoder: Any) -> list[str]:
    """The folders a loaded encoder came from (one per member of a combined model)."""
    return [report.path for report in encoder.load_reports]


def encoder_precision(encoder: Any) -> str:
    return ",".join(report.precision for report in encoder.load_reports)


@dataclass(frozen=True)
class Setting:
    """Everything besides the text that decides a vector."""

    version: str
    task: str | None
    truncate_dim: int | None
    normalize: bool

    def key(self, text: str) -> str:
        head = (
            f"{self.version}\0{self.task or ''}\0{self.truncate_dim or 0}\0{int(self.normalize)}\0"
        )
        return KEY_PREFIX + hashlib.sha256(head.encode() + text.encode("utf-8")).hexdigest()


def pack(row: np.ndarray, tokens: int) -> bytes:
    return struct.pack("<I", tokens) + np.ascontiguousarray(row, dtype="<f4").tobytes()


def unpack(value: bytes) -> tuple[np.ndarray, int]:
    (tokens,) = struct.unpack_from("<I", value)
    return np.frombuffer(value, dtype="<f4", offset=4), tokens


def _same_database(a: str, b: str | None) -> bool:
    if not b:
        return False
    from urllib.parse import urlsplit

    def where(url: str) -> tuple[str, int, str]:
        parts = urlsplit(url)
        return (parts.hostname or "localhost", parts.port or 6379, parts.path.strip("/") or "0")

    return where(a) == where(b)


class EmbeddingCache:
    """Batch get and put of rows in the cache Redis; failures degrade to misses, logged."""

    def __init__(self, url: str, ttl_s: int, broker_urls: Sequence[str | None] = ()) -> None:
        if any(_same_database(url, other) for other in broker_urls):
            raise CacheOnBrokerDatabase(
                "EMBEDDING_CACHE_URL names the broker's (or result backend's) database: the "
                "cache must be a Redis of its own with maxmemory and allkeys-lru"
            )
        import redis

        self.ttl_s = ttl_s
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def get_many(
        self, setting: Setting, texts: Sequence[str], count: bool = True
    ) -> list[tuple[np.ndarray, int] | None]:
        """One round trip: each text's (row, tokens), or None for a miss.

        ``count=False``: a look-up whose misses go on to a worker, which looks again and
        counts then (the API's fast path counts only its full hits, see :meth:`count`).
        """
        try:
            values = self.client.mget([setting.key(t) for t in texts])
        except Exception as exc:
            log.warning("embedding cache unavailable (%s): computing", type(exc).__name__)
            return [None] * len(texts)
        found = [unpack(v) if v is not None else None for v in values]
        if count:
            hits = sum(f is not None for f in found)
            self.count(hits, len(texts) - hits, sum(len(v) for v in values if v is not None))
        return found

    def put_many(
        self, setting: Setting, texts: Sequence[str], rows: np.ndarray, tokens: Sequence[int]
    ) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for text, row, n in zip(texts, rows, tokens, strict=True):
                    pipe.set(setting.key(text), pack(row, int(n)), ex=self.ttl_s)
                pipe.execute()
        except Exception as exc:
            log.warning("embedding cache not written (%s)", type(exc).__name__)

    def count(self, hits: int, misses: int, hit_bytes: int) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(STATS_KEY, "hits", hits)
                pipe.hincrby(STATS_KEY, "misses", misses)
                pipe.hincrby(STATS_KEY, "hit_bytes", hit_bytes)
                pipe.execute()
        except Exception as exc:
            log.warning("embedding cache stats not counted (%s)", type(exc).__name__)

    def stats(self) -> dict[str, int]:
        """Hits, misses, hit bytes (every process), entries and the server's used memory."""
        raw = self.client.hgetall(STATS_KEY)
        out = {k.decode(): int(v) for k, v in raw.items()}
        out["entries"] = int(self.client.dbsize()) - (1 if raw else 0)  # not the stats hash
        out["memory_bytes"] = int(self.client.info("memory").get("used_memory", 0))
        return out


_caches: dict[str, EmbeddingCache] = {}


def embedding_cache(settings: Settings | None = None) -> EmbeddingCache | None:
    """This process's cache client, or None when ``EMBEDDING_CACHE_URL`` is unset."""
    settings = settings or get_settings()
    if not settings.cache_url:
        return None
    cache = _caches.get(settings.cache_url)
    if cache is None:
        cache = EmbeddingCache(
            settings.cache_url,
            settings.cache_ttl_s,
            broker_urls=(settings.broker_url, settings.result_backend),
        )
        _caches[settings.cache_url] = cache
    return cache

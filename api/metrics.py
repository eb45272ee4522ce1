"""Prometheus metrics: requests and latency per route, jobs by state, queue depth; per
project: usage (from ``usage_daily``), stored bytes, and embeddings refused by a rate limit.

Each app gets its own registry (tests build several apps in one process). Jobs and queue
depth are read when scraped, with short timeouts, so a scrape never shows stale numbers
and a slow database cannot hang it for long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.config import get_settings

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "embedding_api_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "embedding_api_request_duration_seconds",
            "Time to answer a request, by method and route template.",
            ("method", "route"),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "embedding_rate_limited_total",
            "Embeddings requests refused (429) by a project's rate limit, by project id and "
            "limit (requests or tokens), counted by this API process.",
            ("project", "limit"),
            registry=self.registry,
        )
        self.registry.register(_StateCollector())
        self.registry.register(_CacheCollector())
        self.registry.register(_UsageCollector())


class _StateCollector(Collector):
    """Jobs by state (from the database) and messages waiting per queue (from Redis)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "embedding_finetune_jobs", "Fine-tune jobs by state.", labels=["state"]
        )
        try:
            from db import repo
            from db.session import session_scope

            with session_scope() as session:
                counts = repo.jobs.count_jobs_by_status(session)
            for state, n in counts.items():
                jobs.add_metric([state], n)
        except Exception as exc:
            log.warning("metrics: job counts unavailable (%s)", type(exc).__name__)
        yield jobs
        depth = GaugeMetricFamily(
            "embedding_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        for queue, n in _queue_depths().items():
            depth.add_metric([queue], n)
        yield depth


class _CacheCollector(Collector):
    """The embedding cache, read from its Redis at scrape time: hits, misses and hit bytes
    of the API and every worker (counted there), entries and the server's memory."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        from workers.serving.embedding_cache import embedding_cache

        try:
            cache = embedding_cache()
            stats = cache.stats() if cache is not None else None
        except Exception as exc:
            log.warning("metrics: embedding cache unavailable (%s)", type(exc).__name__)
            stats = None
        if stats is None:
            return
        for name, field, text in (
            ("embedding_cache_hits", "hits", "Texts answered from the embedding cache."),
            ("embedding_cache_misses", "misses", "Texts looked up and not found."),
            ("embedding_cache_hit_bytes", "hit_bytes", "Bytes of vectors served from the cache."),
        ):
            yield CounterMetricFamily(name, text, value=stats.get(field, 0))
        yield GaugeMetricFamily(
            "embedding_cache_entries", "Vectors in the cache.", value=stats["entries"]
        )
        yield GaugeMetricFamily(
            "embedding_cache_memory_bytes",
            "Memory the cache's Redis uses (bounded by its maxmemory).",
            value=stats["memory_bytes"],
        )


class _UsageCollector(Collector):
    """Each project's usage, summed over every day of ``usage_daily`` (read at scrape time,
    so every API process shows the whole fleet's), and the bytes it stores."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        usage = CounterMetricFamily(
            "embedding_project_usage",
            "What each project used, by project id and counter (gpu_seconds_training, "
            "gpu_seconds_embedding, pairs_trained, tokens_embedded, embedding_requests).",
            labels=["project", "counter"],
        )
        stored = GaugeMetricFamily(
            "embedding_project_stored_bytes",
            "Bytes each project stores (its files and model versions).",
            labels=["project"],
        )
        try:
            from db import repo
            from db.session import session_scope

            with session_scope() as session:
                totals = repo.usage.totals(session)
                sizes = repo.storage.stored_bytes_by_project(session)
        except Exception as exc:
            log.warning("metrics: project usage unavailable (%s)", type(exc).__name__)
            return
        for project, counters in sorted(totals.items()):
            for counter, value in counters.items():
                usage.add_metric([project, counter], value)
        for project, size in sorted(sizes.items()):
            stored.add_metric([project], size)
        yield usage
        yield stored


def _queue_depths() -> dict[str, int]:
    """Redis list lengths of the gpu and cpu queues; nothing for the embedded memory broker."""
    url = get_settings().broker_url
    if not url or not url.startswith(("redis://", "rediss://")):
        return {}
    import redis

    from workers.app import CPU_QUEUE, EMBED_QUEUE, GPU_QUEUE

    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return {q: int(client.llen(q)) for q in (GPU_QUEUE, CPU_QUEUE, EMBED_QUEUE)}
        finally:
            client.close()
    except Exception as exc:
        log.warning("metrics: queue depth unavailable (%s)", type(exc).__name__)
        return {}


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware, which would buffer bodies): time every request and
    label it by route template, never by raw path (ids would explode the label set)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status[0])).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)

"""Benchmark results: figures of a speed benchmark, and their history per model."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import values as v
from db.models import (
    BenchmarkResult,
)
from db.values import InvalidValue

_BENCH_TEXT = {"model": 500, "device": 64, "precision": 32, "package_version": 64, "host": 255}


_BENCH_REQUIRED_FLOATS = (
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "latency_min_ms",
    "latency_max_ms",
    "throughput_per_s",
)


_BENCH_OPTIONAL_FLOATS = ("grad_step_ms", "optimizer_step_ms", "peak_memory_mb")


def add_benchmark_result(session: Session, **figures: Any) -> BenchmarkResult:
    """Store one benchmark measurement (every figure a finite, non-negative number)."""
    known = {*_BENCH_TEXT, *_BENCH_REQUIRED_FLOATS, *_BENCH_OPTIONAL_FLOATS, "batch_size"}
    unknown = sorted(set(figures) - known)
    if unknown:
        raise InvalidValue(f"unknown benchmark figures {unknown}; known: {sorted(known)}")
    missing = sorted(known - set(figures) - set(_BENCH_OPTIONAL_FLOATS))
    if missing:
        raise InvalidValue(f"missing benchmark figures {missing}")
    row: dict[str, Any] = {k: v.text(figures[k], k, n) for k, n in _BENCH_TEXT.items()}
    row["batch_size"] = v.integer(figures["batch_size"], "batch_size", minimum=1)
    for k in _BENCH_REQUIRED_FLOATS:
        row[k] = v.number(figures[k], k, minimum=0.0)
    for k in _BENCH_OPTIONAL_FLOATS:
        row[k] = v.optional_number(figures.get(k), k, minimum=0.0)
    result = BenchmarkResult(**row)
    session.add(result)
    session.flush()
    return result


def benchmark_history(
    session: Session, model: str | None = None, limit: int = 50
) -> list[BenchmarkResult]:
    """The newest measurements first, optionally for one model."""
    limit = v.integer(limit, "limit", minimum=1)
    query = select(BenchmarkResult)
    if model is not None:
        query = query.where(BenchmarkResult.model == v.text(model, "model"))
    query = query.order_by(BenchmarkResult.created_at.desc(), BenchmarkResult.id.desc())
    return list(session.scalars(query.limit(limit)))

"""Benchmark figures into ``benchmark_results``: the table the performance trend is read from.

Two ways in: the ``embedding.benchmark`` task (and ``embedctl bench --record``) measure a
model and record the figures; the validation suite's benchmark check records its own
figures too, so every validation run adds a point to the trend.
"""

from __future__ import annotations

from typing import Any

from db import repo
from db.session import session_scope
from embedding.validation import CheckResult


def run_and_record_benchmark(model: str, iterations: int, batch_size: int) -> dict[str, Any]:
    """Benchmark ``model`` (from this process's model cache) and record the figures."""
    from embedding.evaluation.bench import benchmark_encoder
    from workers.serving.model_cache import model_cache

    figures = benchmark_encoder(
        model_cache().get(model), iterations=iterations, batch_size=batch_size
    )
    record_benchmark(figures.to_dict())
    return figures.to_dict()


def record_benchmark(figures: dict[str, Any]) -> None:
    """One ``benchmark_results`` row from ``BenchmarkFigures.to_dict()``-shaped figures."""
    from embedding import __version__

    lat = figures["latency"]
    with session_scope() as session:
        repo.benchmarks.add_benchmark_result(
            session,
            model=figures["model"],
            device=figures["device"],
            precision=figures["precision"],
            batch_size=figures["batch_size"],
            latency_p50_ms=lat["p50_ms"],
            latency_p95_ms=lat["p95_ms"],
            latency_p99_ms=lat["p99_ms"],
            latency_mean_ms=lat["mean_ms"],
            latency_min_ms=lat["min_ms"],
            latency_max_ms=lat["max_ms"],
            throughput_per_s=figures["throughput_per_s"],
            grad_step_ms=figures.get("grad_step_ms"),
            optimizer_step_ms=figures.get("optimizer_step_ms"),
            peak_memory_mb=figures["peak_memory_mb"],
            package_version=__version__,
            host=figures["host"],
        )


def record_benchmark_from_check(result: CheckResult) -> None:
    """The benchmark check's figures also go to ``benchmark_results`` (the trend)."""
    if result.status in ("error", "unavailable") or "latency" not in result.figures:
        return
    figures = dict(result.figures)
    gradient = figures.get("gradient") or {}
    figures["grad_step_ms"] = gradient.get("forward_backward_ms")
    figures["optimizer_step_ms"] = gradient.get("optimizer_ms")
    record_benchmark(figures)

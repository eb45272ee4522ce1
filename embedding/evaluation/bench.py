"""Latency percentiles, batch throughput and peak memory of an encoder.

Used by the validation suite's benchmark check, the ``embedding.benchmark`` task and
``embedctl bench``. Figures are measured, never estimated: each timing wraps the whole
call a user would make (tokenize, forward, pool, normalize, copy out).
"""

from __future__ import annotations

import platform
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from embedding.data.corpus import code_corpus


@dataclass
class LatencyStats:
    iterations: int
    mean_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        arr = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            iterations=len(arr),
            mean_ms=float(arr.mean()),
            min_ms=float(arr.min()),
            max_ms=float(arr.max()),
            p50_ms=float(np.percentile(arr, 50)),
            p95_ms=float(np.percentile(arr, 95)),
            p99_ms=float(np.percentile(arr, 99)),
        )


@dataclass
class BenchmarkFigures:
    model: str
    device: str
    precision: str
    batch_size: int
    latency: LatencyStats
    throughput_per_s: float
    peak_memory_mb: float
    host: str
    grad_step_ms: float | None = None  # forward + backward, median
    optimizer_step_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_calls(fn: Callable[[], object], iterations: int, warmup: int = 2) -> list[float]:
    """Milliseconds of ``iterations`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def peak_memory_mb(device: str = "cpu") -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def benchmark_encoder(
    encoder: Any,
    iterations: int = 20,
    batch_size: int = 64,
    batch_texts: int = 256,
    text: str = "def calculate_sum(items): return sum(items)",
) -> BenchmarkFigures:
    """Single-text latency over ``iterations`` calls, and batch throughput on the code corpus."""
    latency = LatencyStats.from_samples(time_calls(lambda: encoder.encode(text), iterations))
    corpus = code_corpus(batch_texts, seed=7)
    encoder.encode(corpus[:batch_size], batch_size=batch_size)
    start = time.perf_counter()
    encoder.encode(corpus, batch_size=batch_size)
    throughput = len(corpus) / (time.perf_counter() - start)
    device = getattr(encoder, "device", "cpu")
    return BenchmarkFigures(
        model=encoder.spec.name,
        device=device,
        precision=getattr(encoder, "precision", "fp32"),
        batch_size=batch_size,
        latency=latency,
        throughput_per_s=throughput,
        peak_memory_mb=peak_memory_mb(device),
        host=platform.node(),
    )

"""Check 4, benchmark: single-text latency, batch throughput, and a real gradient step.

The seed's gradient benchmark timed a constant: the probe (:func:`time_train_step`) times a
real forward + backward of the triplet loss on 5 triplets, with the optimizer step beside it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from embedding.data.examples import SEED_TRIPLETS, Example
from embedding.validation.results import CheckResult, ResultBuilder, guarded

if TYPE_CHECKING:
    from embedding.inference.encoder import Encoder
    from embedding.models.specs import ModelSpec

# Thresholds (the seed's criteria).
MAX_LATENCY_MS = 50.0
MAX_GRAD_MS = 200.0

# The convergence check's margin (see its CONVERGENCE_CONFIG): with it the triplet loss on the
# seed's triplets is non-zero, so the timed backward really computes gradients.
TIMING_MARGIN = 1.0


def time_train_step(
    model: str | ModelSpec | Encoder, triplets: Sequence[Example] = SEED_TRIPLETS, repeats: int = 10
) -> dict[str, Any]:
    """Median ms of forward+backward of the triplet loss on the batch, and of the optimizer step.

    The whole computation is timed: tokenizing, one forward over all 15 texts, loss, backward
    through every trainable parameter; clipping and the optimizer step are timed beside it.
    On a fresh copy of the model (:func:`~embedding.training.setup.load_for_training`), in train
    mode, two warm-up steps.
    """
    import torch

    from embedding.data.examples import validate_examples
    from embedding.training.config import TrainConfig
    from embedding.training.setup import load_for_training, make_optimizer
    from embedding.training.steps import batch_loss

    encoder = load_for_training(model)
    encoder.model.train()
    config = TrainConfig(loss="triplet", lr=1e-5, margin=TIMING_MARGIN)
    optimizer = make_optimizer(encoder.model, config)
    rows = validate_examples(triplets)
    forward_backward, optimizer_ms, grad_norm = [], [], 0.0
    for i in range(repeats + 2):
        optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = batch_loss(encoder, rows, config)
        loss.backward()
        t1 = time.perf_counter()
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), config.max_grad_norm)
        )
        optimizer.step()
        t2 = time.perf_counter()
        if i >= 2:  # two warm-up steps
            forward_backward.append((t1 - t0) * 1000)
            optimizer_ms.append((t2 - t1) * 1000)
    return {
        "forward_backward_ms": statistics.median(forward_backward),
        "optimizer_ms": statistics.median(optimizer_ms),
        "grad_norm": grad_norm,
        "batch": len(rows),
        "precision": encoder.precision,
        "threads": torch.get_num_threads(),  # the step's intra-op threads: its figure depends on them
        "fused_adamw": bool(optimizer.defaults.get("fused")),
        "repeats": repeats,
    }


@guarded
def check_benchmark(
    model: str, iterations: int = 20, load: Callable[[str], Any] | None = None
) -> CheckResult:
    """Single-embedding latency, batch throughput, and a real gradient step on 5 triplets."""
    from embedding.evaluation.bench import benchmark_encoder

    check = ResultBuilder("benchmark")
    encoder = check.load(model, load)
    if encoder is None:
        return check.result()
    figures = benchmark_encoder(encoder, iterations=max(iterations, 10))
    check.figures.update(figures.to_dict())
    lat = figures.latency
    check.criterion(
        "single-embedding latency (mean)",
        f"< {MAX_LATENCY_MS:g} ms",
        round(lat.mean_ms, 2),
        lat.mean_ms < MAX_LATENCY_MS,
    )
    step = time_train_step(model)
    check.figures["gradient"] = step
    fb = float(step["forward_backward_ms"])
    check.criterion(
        "forward + backward, 5 triplets (median)",
        f"< {MAX_GRAD_MS:g} ms",
        round(fb, 1),
        fb < MAX_GRAD_MS,
    )
    autodiff = bool(step.get("grad_norm", 0.0) > 0.0)
    check.criterion(
        "autodiff available (non-zero gradients)", "grad norm > 0", step.get("grad_norm"), autodiff
    )
    return check.result()

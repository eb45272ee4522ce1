"""Forward passes side by side, one core each: data parallelism for inference on a CPU.

torch runs each op on every core (intra-op threads), and every op ends at a barrier where
the cores wait for each other. On a small CPU serving short texts an op lasts tens to
hundreds of microseconds, a pass is hundreds of ops, and whenever anything else wants a
core (Celery's threads, Redis, the API, the clients) the thread it preempts holds up the
whole op: while one core runs the other side, the other spins at the barrier. A
:class:`PassPool` runs whole forward passes instead, each on one single-threaded worker,
so no pass waits for another and a preempted pass delays only itself.

Measured on minilm (Xeon with AMX, 2 cores, bf16, code snippets): two batches of 16 on two
single-threaded workers ran 144-193 texts/s where one at a time on both cores ran 123-134;
with a bursty side load busy 30 % of the time, 117 against 93. The embed worker runs its
batches this way; ``benchmarks/serve.py --passes 1`` runs it the old way, and
``benchmarks/RESULTS.md`` has both.

A worker thread's intra-op thread count is its own (OpenMP keeps it per thread), but
``torch.set_num_threads`` also sets the process-wide default that threads started later
inherit: each worker sets 1 for itself (:func:`~embedding.inference.torch_threads.set_intra_op`,
which holds against the default changing later), and the pool then restores the default the
caller had, so the rest of the process (a training loop, say) keeps every core.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def _single_threaded() -> None:
    from embedding.inference.torch_threads import set_intra_op

    set_intra_op(1)


class PassPool:
    """``workers`` threads, each running torch on one core; ``submit`` a pass to one."""

    def __init__(self, workers: int) -> None:
        import torch

        if workers < 1:
            raise ValueError(f"a pass pool needs at least one worker, got {workers}")
        self.workers = workers
        default = torch.get_num_threads()
        self._executor = ThreadPoolExecutor(
            workers, thread_name_prefix="encode-pass", initializer=_single_threaded
        )
        # Start every thread now (each first task must meet the others at the barrier, so
        # no thread takes two), then give the process its default back.
        meet = threading.Barrier(workers)
        for started in [self._executor.submit(meet.wait) for _ in range(workers)]:
            started.result()
        torch.set_num_threads(default)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self._executor.submit(fn, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


__all__ = ["PassPool"]

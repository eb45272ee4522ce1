"""Each worker pool runs torch on its own thread counts (:mod:`embedding.inference.torch_threads`).

``embedctl worker`` runs one process per queue and tells each which pools run beside it
(``EMBEDDING_WORKER_POOLS``); each process applies its counts before it serves, and again
in every prefork child (a forked child starts its OpenMP runtime afresh). The embedded
default runs its pools as threads of one process: each thread sets its own intra-op count
(OpenMP keeps it per thread) as it starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from embedding.inference import torch_threads

log = logging.getLogger(__name__)


def pool_of(queues: Iterable[str]) -> str:
    """The pool a worker serving ``queues`` is: gpu if it trains, embed if it serves, else cpu."""
    names = set(queues)
    return "gpu" if "gpu" in names else "embed" if "embed" in names else "cpu"


def configure_process(queues: list[str], kind: str) -> tuple[int, int]:
    """Apply this pool's counts where its tasks run: in this process for a threads or solo
    pool; for a prefork pool only in each child it forks (``worker_process_init``). Torch
    is never set up in a prefork parent: a child forked from a process whose OpenMP
    runtime has started hangs in its first parallel op (seen here: a fine-tune received and
    never begun). ``OMP_NUM_THREADS`` is set for the case something imports torch first."""
    pool = pool_of(queues)
    counts = torch_threads.pool_threads(pool, torch_threads.running_pools(queues))
    if kind == "prefork":
        from celery.signals import worker_process_init

        def in_child(**_: Any) -> None:
            torch_threads.apply(*counts)
            parallel_tokenizing()

        os.environ["OMP_NUM_THREADS"] = str(counts[0])
        worker_process_init.connect(in_child, weak=False)
    else:
        torch_threads.apply(*counts)
        parallel_tokenizing()
    log.info("pool %s (%s): torch intra-op %d, inter-op %d", pool, kind, *counts)
    return counts


def parallel_tokenizing() -> bool:
    """Let the Rust tokenizers use every core in this process where ``tokenizer_parallelism``
    says so (``auto``: when this pool's models run on a GPU, whose passes would otherwise
    wait on one core tokenizing); returns whether it did.

    Only where tasks run and nothing forks afterwards: a pool's own process (threads,
    solo) or a prefork child, never a prefork parent (its children would get the thread
    pool disabled, with a warning). The tokenizers read the variable on every call.
    """
    from core.config import get_settings

    settings = get_settings()
    mode = settings.tokenizer_parallelism
    if mode == "auto":
        from embedding.inference.encoder import pick_device

        on = pick_device(settings.device).startswith("cuda")
    else:
        on = mode == "on"
    if on:
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
    return on


def in_thread(queues: Iterable[str], running: Iterable[str], target: Callable[[], Any]):
    """``target`` wrapped to apply the counts of the pool serving ``queues`` in its own
    thread first (the embedded default's worker threads)."""
    counts = torch_threads.pool_threads(pool_of(queues), list(running))

    def run() -> Any:
        torch_threads.apply(*counts)
        return target()

    return run

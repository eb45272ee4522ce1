"""How many torch threads each worker pool runs: intra-op and inter-op, per pool.

On a small CPU two pools that each run torch on every core starve each other: torch's
op-level threads meet at a barrier after every op, so a training step on both cores holds
up every op of an embedding beside it (on 2 cores, one text took 383 ms beside a fine-tune
against ~5 ms alone). Each pool therefore gets its own count, from the settings
(``EMBEDDING_TORCH_THREADS_<POOL>``, ``EMBEDDING_TORCH_INTEROP_THREADS_<POOL>``; 0: the
default here), and the defaults split the cores between the pools that run torch in this
worker: the gpu pool (training, checks) and the embed pool (serving). The cpu pool runs no
model: one thread. A pool alone on its host gets every core.

Measured by ``benchmarks/contention.py`` (``benchmarks/RESULTS.md``). This module imports
torch only to apply the counts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from core.config import Settings, get_settings

POOLS = ("gpu", "cpu", "embed")
TORCH_POOLS = ("gpu", "embed")  # the pools that run models
# Where `embedctl worker` tells each pool which pools run beside it in this worker.
POOLS_ENV = "EMBEDDING_WORKER_POOLS"


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads(pool: str, running: Iterable[str], n_cores: int) -> tuple[int, int]:
    """(intra-op, inter-op) for ``pool`` when ``running`` pools share ``n_cores``: the cores
    split evenly between the torch pools that run (the gpu pool takes the odd one), one
    inter-op thread each (eager forward and backward passes do not use inter-op threads)."""
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}: one of {', '.join(POOLS)}")
    torch_pools = [p for p in TORCH_POOLS if p in set(running) | {pool}]
    if pool not in TORCH_POOLS:
        return 1, 1
    share = max(1, n_cores // len(torch_pools))
    if pool == "gpu":
        share = max(1, n_cores - share * (len(torch_pools) - 1))
    return share, 1


def pool_threads(
    pool: str, running: Iterable[str], settings: Settings | None = None, n_cores: int | None = None
) -> tuple[int, int]:
    """The settings' counts for ``pool`` where set (non-zero), else :func:`default_threads`."""
    settings = settings or get_settings()
    intra, inter = default_threads(pool, running, n_cores or cores())
    asked_intra = getattr(settings, f"torch_threads_{pool}")
    asked_inter = getattr(settings, f"torch_interop_threads_{pool}")
    return asked_intra or intra, asked_inter or inter


def running_pools(default: Iterable[str]) -> list[str]:
    """The pools of this worker: what ``embedctl worker`` put in :data:`POOLS_ENV`, else
    ``default`` (a worker started on its own queues)."""
    named = os.environ.get(POOLS_ENV, "")
    return [p for p in named.split(",") if p] or list(default)


def apply(intra: int, inter: int) -> None:
    """Set this thread's intra-op count (and the process default that later threads
    inherit) and the process's inter-op count. The inter-op pool can be sized once, before
    its first use; a later call keeps the first size."""
    import torch

    set_intra_op(intra)
    with contextlib.suppress(RuntimeError):  # already sized: it keeps the first size
        torch.set_num_interop_threads(inter)


def set_intra_op(count: int) -> None:
    """Set this thread's intra-op count, to hold whatever other threads set later.

    torch sets a thread's count up lazily, on its first parallel call, from the process
    default *at that moment* (every ``set_num_threads`` also sets that default): a count set
    before that is overwritten by whatever another thread set meanwhile. The embedded
    workers' gpu thread set 2, the cpu thread then set 1, and the gpu thread ran its whole
    life on 1. Asking for the count first makes the lazy setup happen now.
    """
    import torch

    torch.get_num_threads()  # this thread's lazy setup, before its count is set
    torch.set_num_threads(count)


def current() -> dict[str, int]:
    """This thread's torch thread counts, as a pool reports them."""
    import torch

    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}

"""Data-parallel fine-tuning: the same loop in N processes, one per device.

:func:`finetune_distributed` starts one process per device with
``torch.multiprocessing.start_processes`` (spawn: a fresh interpreter each, safe beside
CUDA), joins them into a ``torch.distributed`` group (NCCL on CUDA, gloo on CPU; a
file rendezvous in a temporary folder, so no port is guessed), and runs
:func:`embedding.training.loop.finetune` in each with a
:class:`~embedding.training.rank_group.RankGroup` (what a rank does differently is there).

The caller's process stays the one the caller knows: rank 0 sends what it would have
called back (each step, each epoch, each checkpoint) over a queue, and the launcher calls
the caller's callbacks here, in order; ``should_stop`` is asked here too (twice a second)
and reaches rank 0 as an event, which stops every rank at the same step. The result is
rank 0's :class:`~embedding.training.config.TrainResult`.

A rank that dies (killed, out of memory, an exception) ends the group: the others are
terminated, and the launcher raises the rank's own exception when it sent one (a
:class:`~embedding.training.config.TrainingDiverged` stays one), else :class:`RankDied`
(the others' errors, a peer gone mid-collective, are only its echo). A rank whose
launcher dies ends within a second.
Checkpoints are rank 0's and hold no world size, so a resume may run on another number of
devices (the batches are the global ones, the same for any world size).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from embedding.models.specs import ModelSpec
from embedding.training.config import EpochStats, TrainConfig, TrainResult

STOP_POLL_S = 0.5  # how often the launcher asks ``should_stop``


class RankDied(RuntimeError):
    """A rank of the group ended without finishing (killed, or its exit code not 0)."""


def local_devices(n: int) -> list[str]:
    """``n`` devices of this host for ``embedctl finetune --devices n``: CUDA ``0..n-1``
    where there is CUDA (refused past the count), else ``n`` CPU processes (gloo)."""
    if n < 1:
        raise ValueError(f"devices must be at least 1, got {n}")
    if torch.cuda.is_available():
        have = torch.cuda.device_count()
        if n > have:
            raise ValueError(f"--devices {n}, but this host has {have} CUDA device(s)")
        return [f"cuda:{i}" for i in range(n)]
    return ["cpu"] * n


def finetune_distributed(
    model: str | Path | ModelSpec,
    examples: Sequence[Sequence[str]],
    config: TrainConfig | None = None,
    *,
    devices: Sequence[str],
    environment: dict[str, str] | None = None,
    out_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    eval_examples: Sequence[Sequence[str]] | None = None,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    stop_after_epoch: int | None = None,
    checkpoint_every_steps: int = 0,
    checkpoint_every_s: float = 0.0,
    on_checkpoint: Callable[[Path, int, int], None] | None = None,
    stop_when_exhausted: bool = False,
    on_prepared: Callable[[str], None] | None = None,
) -> TrainResult:
    """:func:`~embedding.training.loop.finetune` as a group of ``len(devices)`` ranks, rank r
    on ``devices[r]`` (``"cpu"`` or ``"cuda:<i>"``); one device runs in this process.

    ``environment``: set for the ranks only (e.g. ``CUDA_VISIBLE_DEVICES`` of the group's
    GPUs). The other arguments are :func:`finetune`'s; the callbacks run in this process.
    """
    from embedding.training.loop import finetune

    devices = list(devices)
    settings: dict[str, Any] = {
        "out_dir": out_dir,
        "checkpoint_dir": checkpoint_dir,
        "resume": resume,
        "eval_examples": eval_examples,
        "stop_after_epoch": stop_after_epoch,
        "checkpoint_every_steps": checkpoint_every_steps,
        "checkpoint_every_s": checkpoint_every_s,
        "stop_when_exhausted": stop_when_exhausted,
    }
    callbacks = {
        "epoch": on_epoch_end,
        "step": on_step,
        "checkpoint": on_checkpoint,
        "prepared": on_prepared,
    }
    if len(devices) <= 1:
        return finetune(
            model,
            examples,
            config,
            on_epoch_end=on_epoch_end,
            on_step=on_step,
            should_stop=should_stop,
            on_checkpoint=on_checkpoint,
            on_prepared=on_prepared,
            **settings,
        )
    config = config or TrainConfig()
    if config.batch_size < len(devices):
        raise ValueError(
            f"batch_size {config.batch_size} is smaller than the {len(devices)} devices: "
            "each rank needs rows of every batch"
        )
    backend = "nccl" if all(d.startswith("cuda") for d in devices) else "gloo"
    threads = max(1, torch.get_num_threads() // len(devices)) if backend == "gloo" else 0
    context = torch.multiprocessing.get_context("spawn")
    events = context.Queue()
    stop = context.Event()
    rendezvous = Path(tempfile.mkdtemp(prefix="embedding-group-"))
    with _environment(_rank_environment(backend, environment)):
        group = torch.multiprocessing.start_processes(
            _rank_main,
            args=(
                len(devices),
                str(rendezvous / "init"),
                backend,
                devices,
                threads,
                model,
                list(examples),
                config,
                settings,
                events,
                stop,
            ),
            nprocs=len(devices),
            join=False,
            start_method="spawn",
        )
    result: TrainResult | None = None
    errors: list[tuple[int, BaseException]] = []
    failure: BaseException | None = None  # a callback of ours raised: stop, then raise it
    try:
        last_ask = 0.0
        done = False
        while not done:
            try:
                done = group.join(timeout=0.1)
            except Exception as exc:  # a rank failed; the others are terminated
                _drain(events, callbacks, errors)
                codes = [p.exitcode for p in group.processes]
                raise _rank_failure(errors, exc, codes) from exc
            try:
                result = _drain(events, callbacks, errors) or result
            except Exception as exc:
                failure = failure or exc
                stop.set()
            if should_stop is not None and time.monotonic() - last_ask >= STOP_POLL_S:
                last_ask = time.monotonic()
                if should_stop():
                    stop.set()
        result = _drain(events, callbacks, errors) or result
    finally:
        _end(group)
        shutil.rmtree(rendezvous, ignore_errors=True)
    if failure is not None:
        raise failure
    if result is None:
        raise RankDied("rank 0 ended without a result")
    return result


def _rank_environment(backend: str, extra: dict[str, str] | None) -> dict[str, str]:
    """The ranks talk over loopback (one host): gloo otherwise resolves the host name,
    which an offline machine may not map to an interface."""
    env = dict(extra or {})
    if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ:
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` while the ranks are spawned (they inherit it)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _drain(
    events: Any,
    callbacks: dict[str, Callable[..., None] | None],
    errors: list[tuple[int, BaseException]],
) -> TrainResult | None:
    """Call the callbacks for every event rank 0 has sent; the result if it came."""
    result = None
    while True:
        try:
            kind, *body = events.get_nowait()
        except queue.Empty:
            return result
        if kind == "result":
            result = body[0]
        elif kind == "error":
            errors.append((body[0], _rebuilt(body[1])))
        elif callbacks.get(kind) is not None:
            callbacks[kind](*body)  # type: ignore[misc]


def _rank_failure(
    errors: list[tuple[int, BaseException]], exc: Exception, exit_codes: Sequence[int | None]
) -> BaseException:
    """Why the group ended: :class:`RankDied` for a rank that ended without sending an
    exception (killed: its exit code is a signal other than the SIGTERM that ends the rest),
    whose peers' errors (a peer gone mid-collective) are only its echo; else the failed
    rank's own exception, else the first one sent."""
    sent = {r for r, _ in errors}
    lost = [
        r
        for r, code in enumerate(exit_codes)
        if r not in sent and code not in (0, None, -signal.SIGTERM)
    ]
    if lost:
        code = exit_codes[lost[0]]
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return RankDied(f"rank {lost[0]} of the group ended ({how}) without an error")
    rank = getattr(exc, "error_index", None)
    own = [error for r, error in errors if r == rank]
    if own or errors:
        return (own or [errors[0][1]])[0]
    code = getattr(exc, "exit_code", None)
    return RankDied(f"rank {rank} of the group ended (exit code {code}): {exc}")


def _end(group: Any) -> None:
    """Every rank gone: terminated, then killed after a grace."""
    for process in group.processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + 10
    for process in group.processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(5)


def _rank_main(
    rank: int,
    world_size: int,
    init_file: str,
    backend: str,
    devices: list[str],
    threads: int,
    model: Any,
    examples: list[Any],
    config: TrainConfig,
    settings: dict[str, Any],
    events: Any,
    stop: Any,
) -> None:
    """One rank: join the group, run the loop; rank 0 reports through ``events``."""
    import torch.distributed as dist

    from embedding.training.loop import finetune
    from embedding.training.rank_group import RankGroup

    _end_with_launcher(os.getppid())
    device = devices[rank]
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if threads:
        torch.set_num_threads(threads)
    dist.init_process_group(
        backend, init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    writer = rank == 0

    def send(kind: str) -> Callable[..., None]:
        return lambda *body: events.put((kind, *body))

    try:
        result = finetune(
            model,
            examples,
            config,
            on_epoch_end=send("epoch") if writer else None,
            on_step=send("step") if writer else None,
            on_checkpoint=send("checkpoint") if writer else None,
            on_prepared=send("prepared") if writer else None,
            should_stop=stop.is_set if writer else None,
            group=RankGroup(rank, world_size, device),
            **settings,
        )
        if writer:
            events.put(("result", result))
    except BaseException as exc:
        events.put(("error", rank, _error_record(exc)))
        raise
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _end_with_launcher(launcher: int) -> None:
    """A rank whose launcher is gone (killed with its worker) ends too, within a second, so
    that no orphan goes on writing the checkpoints of a job another worker has taken over."""
    import threading

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(1.0)
        os._exit(70)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _error_record(exc: BaseException) -> tuple[str, str]:
    """What a rank sends of its exception: its type's name and its message, plain strings
    (an exception object may not survive the trip, and nothing here unpickles one)."""
    return type(exc).__name__, str(exc)


def _rebuilt(record: tuple[str, str]) -> BaseException:
    """A rank's exception in the launcher: a divergence stays one (the job fails with it, it
    is not retried), anything else a RuntimeError naming its type."""
    from embedding.training.config import TrainingDiverged

    name, message = record
    if name == TrainingDiverged.__name__:
        return TrainingDiverged(message)
    return RuntimeError(f"{name}: {message}")

"""Which device each gpu pool child owns: one job per GPU on a host with several.

``EMBEDDING_GPUS`` names the host's devices (``0,1,2,3``; unset: ``CUDA_VISIBLE_DEVICES``,
else every GPU the driver shows; none on a CPU host). ``embedctl worker`` sizes its gpu
pool to their count and pins each prefork child to one for its whole life: the child's
index in the pool (billiard's ``process.index``, ``0 .. n-1``) picks the device, and a
child replaced after ``worker_max_tasks_per_child`` tasks takes the index, so the device,
its predecessor left (billiard gives a new child the lowest free index).

Pinning a CUDA child sets ``CUDA_VISIBLE_DEVICES`` to its device before anything in it
touches CUDA (the parent never does: it would not survive the fork), so in the child
``cuda`` *is* that GPU and every model, trainer and check goes there unchanged. Devices
named ``cpu:0, cpu:1, ...`` are a CPU host told it has that many (tests): the children
are sized and pinned the same way, and their models run on the CPU.

A data-parallel job (``n_devices`` > 1) borrows the devices of its worker's other children
for its run: :func:`hold_for_group` takes each device's lock exclusively, and every other
gpu task waits for its own device's lock before it starts (:func:`hold_own_device`, from
``task_prerun``): while a group runs, the children whose devices it holds take no job
(each waits with the one message it was handed). Locks are files under the temp folder,
one folder per worker node, ``flock``-ed: a process that dies lets go of its locks.

The embed pool is not spread: it is one process of threads, whose passes run on one device
(:mod:`workers.serving.embed_batching`); a GPU embeds far more texts a second than one
host's clients send, and a gpu child's jobs use the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# What a pool child was given, for the tasks in it (and the ranks of a group it starts).
DEVICE_ENV = "EMBEDDING_WORKER_DEVICE"
# The host's device list, handed from `embedctl worker` to its gpu pool process.
DEVICES_ENV = "EMBEDDING_WORKER_DEVICES"
# The node (Celery hostname) of the gpu pool: names its presence record and lock folder.
NODE_ENV = "EMBEDDING_WORKER_NODE"


def resolve_devices(
    setting: str, environ: Mapping[str, str] | None = None, count: Any = None
) -> list[str]:
    """The host's gpu devices as names: ``cuda:<id>`` (the id as CUDA_VISIBLE_DEVICES spells
    it: an index or a UUID) or ``cpu:<n>``; empty on a host without GPUs.

    ``setting``: ``EMBEDDING_GPUS``. Empty: ``CUDA_VISIBLE_DEVICES`` when set, else
    ``count()`` GPUs (the driver's count, asked without starting CUDA in this process).
    """
    environ = os.environ if environ is None else environ
    names = [part.strip() for part in setting.split(",") if part.strip()]
    if names:
        kinds = {"cpu" if n.startswith("cpu:") else "cuda" for n in names}
        if len(kinds) > 1:
            raise ValueError(f"EMBEDDING_GPUS mixes cpu:N and GPU ids: {setting!r}")
        out = [n if n.startswith("cpu:") else f"cuda:{n.removeprefix('cuda:')}" for n in names]
        if len(set(out)) != len(out):
            raise ValueError(f"EMBEDDING_GPUS names a device twice: {setting!r}")
        return out
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [f"cuda:{part.strip()}" for part in visible.split(",") if part.strip()]
    n = (count or visible_gpu_count)()
    return [f"cuda:{i}" for i in range(n)]


def visible_gpu_count() -> int:
    """How many GPUs the driver shows, without initializing CUDA here (a prefork parent
    that did would hand its children a CUDA they cannot use): NVML through torch, else a
    short-lived interpreter."""
    import torch

    if torch.version.cuda is None:  # a CPU build of torch
        return 0
    nvml = getattr(torch.cuda, "_device_count_nvml", None)
    if nvml is not None:
        n = nvml()
        if n >= 0:
            return n
    code = "import torch; print(torch.cuda.device_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def host_devices() -> list[str]:
    """This gpu pool's devices (handed down by ``embedctl worker``), else resolved here."""
    handed = os.environ.get(DEVICES_ENV)
    if handed is not None:
        return [d for d in handed.split(",") if d]
    from core.config import get_settings

    return resolve_devices(get_settings().gpus)


@dataclass(frozen=True)
class Assignment:
    index: int  # the child's index in the pool
    device: str  # "cuda:<id>", "cpu:<n>", or "cpu" on a host without GPUs
    pid: int

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "device": self.device, "pid": self.pid}


def device_for(index: int, devices: list[str]) -> str:
    """Child ``index``'s device: the index-th (round robin when the pool was sized larger)."""
    return devices[index % len(devices)] if devices else "cpu"


def pin_child(index: int, devices: list[str]) -> Assignment:
    """Pin this (freshly forked) pool child to its device for its whole life."""
    device = device_for(index, devices)
    os.environ[DEVICE_ENV] = device
    if device.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.removeprefix("cuda:")
    return Assignment(index, device, os.getpid())


def current() -> Assignment:
    """This process's assignment (a child not pinned reports its pool index and ``cpu`` or
    ``cuda``, the device it would pick)."""
    device = os.environ.get(DEVICE_ENV)
    if device is None:
        from embedding.inference.encoder import pick_device

        device = pick_device("auto")
    return Assignment(child_index(), device, os.getpid())


def child_index() -> int:
    from billiard.process import current_process

    return int(getattr(current_process(), "index", 0) or 0)


def connect_pool(devices: list[str], node: str, broker_url: str | None) -> None:
    """In the gpu pool's main process, before its children fork: each child pins itself
    as it starts and says so (log and presence record), and every gpu task waits for its
    device's lock; the main process keeps the presence record alive while it serves."""
    from celery.signals import task_postrun, task_prerun, worker_process_init, worker_ready

    from workers.lifeline import worker_presence

    os.environ[DEVICES_ENV] = ",".join(devices)
    os.environ[NODE_ENV] = node

    def in_child(**_: Any) -> None:
        assignment = pin_child(child_index(), devices)
        print(
            f"embedctl worker: gpu child {assignment.index} (pid {assignment.pid}): "
            f"{assignment.device}",
            file=sys.stderr,
            flush=True,
        )
        worker_presence.record_device(broker_url, node, assignment.as_dict())

    def before_task(**_: Any) -> None:
        take_own_device()

    def after_task(**_: Any) -> None:
        release_own_device()

    def at_ready(**_: Any) -> None:
        worker_presence.keep_devices_alive(broker_url, node)

    worker_process_init.connect(in_child, weak=False)
    task_prerun.connect(before_task, weak=False)
    task_postrun.connect(after_task, weak=False)
    worker_ready.connect(at_ready, weak=False)


# ------------------------------------------------------------------ device locks
def lock_dir(node: str | None = None) -> Path:
    node = node or os.environ.get(NODE_ENV) or "local"
    digest = hashlib.sha256(node.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"embedding-devices-{os.getuid()}-{digest}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _lock(path: Path) -> int:
    """An exclusive ``flock`` on ``path``, waiting for it; returns the descriptor to close."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _device_lock(device: str) -> Path:
    return lock_dir() / (device.replace(":", "_") + ".lock")


_own_fd: int | None = None  # this child's device lock, held for the task that runs


def take_own_device() -> None:
    """Before each gpu task: this child's device, waiting while a group holds it."""
    global _own_fd
    device = os.environ.get(DEVICE_ENV)
    if device is not None and _own_fd is None:
        _own_fd = _lock(_device_lock(device))


def release_own_device() -> None:
    global _own_fd
    if _own_fd is not None:
        os.close(_own_fd)  # closing lets go of the lock
        _own_fd = None


class NotEnoughDevices(ValueError):
    """A job asks for more devices than its worker's host has."""


def group_devices(n_devices: int | str, own: str, devices: list[str]) -> list[str]:
    """The devices a group of ``n_devices`` (``"all"``: every one) runs on: this child's
    first (rank 0), then the others in the host's order."""
    pool = devices or [own]
    n = len(pool) if n_devices == "all" else int(n_devices)
    if n > len(pool):
        raise NotEnoughDevices(
            f"n_devices {n} but this worker's host has {len(pool)} device(s) ({', '.join(pool)})"
        )
    others = [d for d in pool if d != own]
    return [own, *others][:n]


@contextlib.contextmanager
def hold_for_group(group: list[str]) -> Iterator[None]:
    """Every device of ``group`` exclusively. The task lets go of its own device first,
    then takes a host-wide group lock and the group's devices in the host's order, so
    that neither two groups nor a group and a single task ever wait on each other (a
    single task holds one lock and waits for nothing else while holding it)."""
    had_own = _own_fd is not None
    release_own_device()
    fds: list[int] = []
    try:
        fds.append(_lock(lock_dir() / "group.lock"))
        for device in sorted(group, key=_order_key):
            fds.append(_lock(_device_lock(device)))
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)
        if had_own:
            take_own_device()


def _order_key(device: str) -> tuple[str, int | str]:
    kind, _, rest = device.partition(":")
    return (kind, int(rest)) if rest.isdigit() else (kind, rest)


def rank_devices(group: list[str]) -> tuple[list[str], dict[str, str]]:
    """What the ranks of a group run on, and the environment they start with: on CUDA,
    ``CUDA_VISIBLE_DEVICES`` lists the group's GPUs and rank r takes ``cuda:r``; fake cpu
    devices all run on the CPU."""
    if all(d.startswith("cuda:") for d in group):
        ids = ",".join(d.removeprefix("cuda:") for d in group)
        return [f"cuda:{r}" for r in range(len(group))], {"CUDA_VISIBLE_DEVICES": ids}
    return ["cpu"] * len(group), {}

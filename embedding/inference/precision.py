"""Which precision a model runs in when none is asked for: bf16 only where it is faster.

bf16 halves the weights' memory traffic and, on hardware with bf16 matrix units, multiplies
the speed of matrix products: AMX on a Xeon (minilm encodes 2.4x faster than in fp32), the
tensor cores of a GPU. But "supports bf16" is not "faster in bf16". On a CPU whose only bf16
instruction is the avx512_bf16 dot product, oneDNN's bf16 products may run at half the fp32
rate: measured on a Xeon (Emerald Rapids) whose hypervisor hides AMX, one core, 2048^3
products, bf16 84 GFLOP/s against fp32 161, and minilm served 31 texts/s in bf16 against 51
in fp32 on the same two cores. On an AMD EPYC with the same instruction set bf16 ran 1.75x
faster than fp32. CPU flags do not tell these machines apart; a measurement of a few tens of
milliseconds does, once per process.

On a CUDA device with bf16 the default is bf16 for every model whose spec allows it
(tensor cores are why the GPU is there; an H200 runs bf16 products at about 790 TFLOP/s).

An explicit precision is always honoured where the hardware supports it; only the default is
chosen here. bf16 must win by ``MIN_SPEEDUP``: it costs accuracy (min cosine to fp32 about
0.99993 on minilm), so a tie goes to fp32.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

MIN_SPEEDUP = 1.2  # bf16 must be this much faster than fp32 to be the default
_SHAPE = (256, 1024, 1024)  # rows x in x out: a transformer layer's product on a small batch
_lock = threading.Lock()
_measured: dict[str, float] = {}


@dataclass(frozen=True)
class DeviceCaps:
    """What a device offers in bf16, the input of :func:`choose_precision`."""

    kind: str  # "cpu", "cuda", ...: the device string before any ":index"
    bf16: bool  # it can run bf16 at all
    bf16_speedup: float  # fp32 time / bf16 time of a matrix product (inf on a CUDA device)


def bf16_supported(device: str) -> bool:
    """Whether ``device`` can run bf16 at all (not whether it is faster there)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def _seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def bf16_speedup(device: str) -> float:
    """fp32 time / bf16 time of one matrix product on ``device``, measured once a process.

    A CUDA device that supports bf16 counts as fast (its tensor cores are why it is there)."""
    if device.startswith("cuda"):
        return float("inf") if bf16_supported(device) else 0.0
    if not bf16_supported(device):
        return 0.0
    with _lock:
        if device not in _measured:
            import torch
            import torch.nn.functional as F

            rows, fan_in, fan_out = _SHAPE
            x32, w32 = torch.randn(rows, fan_in), torch.randn(fan_out, fan_in)
            x16, w16 = x32.bfloat16(), w32.bfloat16()
            with torch.inference_mode():
                for _ in range(2):  # oneDNN builds its kernels on the first calls
                    F.linear(x32, w32), F.linear(x16, w16)
                # Best of several, interleaved, so that a busy moment hurts neither side alone.
                fp32 = bf16 = float("inf")
                for _ in range(5):
                    fp32 = min(fp32, _seconds(lambda: F.linear(x32, w32)))
                    bf16 = min(bf16, _seconds(lambda: F.linear(x16, w16)))
            _measured[device] = fp32 / bf16
            log.info("bf16 matrix products run %.2fx fp32's speed here", _measured[device])
        return _measured[device]


def choose_precision(
    requested: str | None, default: str, bf16_allowed: bool, caps: DeviceCaps
) -> str:
    """The precision a model loads in, as a pure function of the device's capabilities.

    ``requested`` (a caller's explicit choice) is kept unless the device cannot run it.
    Without one: on a CUDA device with bf16, every model runs bf16 unless its spec forbids
    it (``bf16_allowed``), whatever its folder's default says: a model folder, a hub id and
    a fine-tuned export default to fp32 on a CPU, and served fp32 on an H200 a 1.5 B model
    ran at 0.19x sentence-transformers' bf16 speed. On a CPU the spec's ``default`` bf16 is
    kept only where bf16 is at least ``MIN_SPEEDUP`` faster (measured, see the docstring).
    """
    if requested is not None:
        if requested == "bf16" and not (bf16_allowed and caps.bf16):
            return "fp32"
        return requested
    if caps.kind == "cuda" and bf16_allowed and caps.bf16:
        return "bf16"
    if caps.kind == "cuda":
        return "fp16" if default == "fp16" else "fp32"
    if default != "bf16":
        return default
    if bf16_allowed and caps.bf16 and caps.bf16_speedup >= MIN_SPEEDUP:
        return "bf16"
    return "fp32"


def device_caps(device: str) -> DeviceCaps:
    """What ``device`` can do in bf16: asked of torch, and measured once a process on a CPU."""
    kind = device.split(":")[0]
    return DeviceCaps(kind=kind, bf16=bf16_supported(device), bf16_speedup=bf16_speedup(device))


def resolve_precision(requested: str | None, default: str, bf16_allowed: bool, device: str) -> str:
    """:func:`choose_precision` on this process's ``device``."""
    return choose_precision(requested, default, bf16_allowed, device_caps(device))


__all__ = [
    "MIN_SPEEDUP",
    "DeviceCaps",
    "bf16_speedup",
    "bf16_supported",
    "choose_precision",
    "device_caps",
    "resolve_precision",
]

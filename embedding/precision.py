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

An explicit precision is always honoured where the hardware supports it; only the default is
chosen here. bf16 must win by ``MIN_SPEEDUP``: it costs accuracy (min cosine to fp32 about
0.99993 on minilm), so a tie goes to fp32.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

MIN_SPEEDUP = 1.2  # bf16 must be this much faster than fp32 to be the default
_SHAPE = (256, 1024, 1024)  # rows x in x out: a transformer layer's product on a small batch
_lock = threading.Lock()
_measured: dict[str, float] = {}


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


def resolve_precision(requested: str | None, default: str, bf16_allowed: bool, device: str) -> str:
    """The precision a model loads in.

    ``requested`` (a caller's explicit choice) is kept unless the device cannot run it; the
    model's ``default`` bf16 is kept only where bf16 is at least ``MIN_SPEEDUP`` faster."""
    precision = requested or default
    if precision != "bf16":
        return precision
    if not (bf16_allowed and bf16_supported(device)):
        return "fp32"
    if requested is None and bf16_speedup(device) < MIN_SPEEDUP:
        return "fp32"
    return "bf16"


__all__ = ["MIN_SPEEDUP", "bf16_speedup", "bf16_supported", "resolve_precision"]

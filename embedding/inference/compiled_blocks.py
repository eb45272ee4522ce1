"""Compiled transformer blocks for inference: fewer, fused kernels per forward pass.

Why: on an H200 the 1.5 B Qodo-shaped encode reached 1.18-1.21x sentence-transformers and
33 % of the bf16 matmul peak (benchmarks/RESULTS.md); its matrix products are large, and
the time between them goes to element-wise work (RMSNorm in fp32, rotary, SiLU x mul,
residual adds), one kernel and one trip through memory each, and to launching them.
``torch.compile`` (inductor) fuses that work into a few kernels per block.

How: *regional* compilation (PyTorch's recipe for models of repeated blocks): each block
of the model's longest run of same-class blocks (BERT's ``encoder.layer``, Qwen2's
``layers``) is compiled, and since the blocks share their code, one compiled graph serves
all of them (``inline_inbuilt_nn_modules``, torch >= 2.5): compile time is one block's,
seconds instead of minutes for the whole 28-layer model. ``dynamic=True`` from the first
call, because every pass has its own (rows, width): one graph covers them, where
specialising would recompile for each new shape. Embeddings, masks and pooling stay eager.

What it costs and where it is used: a model compiles as it loads (``Encoder.load`` runs a
pass of two texts and one of a single text, the graphs requests use; on two Xeon cores
30 s cold, 8 s with inductor's on-disk cache warm), so a machine that cannot compile
refuses the model at load with the reason, and no request pays the compile. The compiled
blocks are those inference runs: the encoder's low-precision twin, or in fp32 (no twin) the
model itself; never a model a trainer updates (``load_for_training`` never compiles).

Measured on CPU (minilm, bf16, 512 code texts, Xeon with AMX, 2 cores, benchmarks/RESULTS.md):
143-153 texts/s eager against 166-175 compiled (on encode.py's 1,000 texts 200-215
against 207-239), min cosine to eager 0.99995, one-text latency unchanged: a modest, noisy
gain on a CPU. It is off unless ``EMBEDDING_COMPILE_BLOCKS`` is set: the GPU figures
that would make it a default there are ``benchmarks/gpu.py``'s "compiled" rows, still to
be measured. On a CPU, inductor's kernels keep the thread count of the thread that
compiled them (the loading thread), also when passes later run on a ``PassPool``.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def repeated_blocks(model: Any) -> list[Any]:
    """The model's longest ``ModuleList`` whose entries all share one class (its layers).

    Found by structure rather than by attribute name, so BERT (``encoder.layer``), Qwen2
    (``layers``) and XLM-RoBERTa, with or without a peft wrapper, need no table."""
    import torch.nn as nn

    best: list[Any] = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > len(best):
            kinds = {type(block) for block in module}
            if len(kinds) == 1:
                best = list(module)
    return best


def compile_blocks(model: Any) -> int:
    """Compile each repeated block of ``model`` in place; the number of blocks compiled.

    Nothing runs here: each block compiles on its first call. A model without repeated
    blocks is left as it is (0)."""
    blocks = repeated_blocks(model)
    for block in blocks:
        block.compile(dynamic=True)
    if blocks:
        log.info(
            "compiling %d %s blocks on their first call", len(blocks), type(blocks[0]).__name__
        )
    return len(blocks)


def is_compiled(model: Any) -> bool:
    """Whether :func:`compile_blocks` has been applied to ``model``."""
    blocks = repeated_blocks(model)
    return bool(blocks) and all(b._compiled_call_impl is not None for b in blocks)


__all__ = ["compile_blocks", "is_compiled", "repeated_blocks"]

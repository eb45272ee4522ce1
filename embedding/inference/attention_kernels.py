"""Which attention kernels our forward passes run on a GPU: no cuDNN attention.

PyTorch's ``scaled_dot_product_attention`` picks among flash, memory-efficient, cuDNN and
math kernels; on Hopper GPUs (H100, H200) with bf16 it prefers cuDNN. We switch cuDNN off,
for two measured reasons:

* **It plans per shape.** cuDNN builds an execution plan for every new (rows, heads, width)
  it sees, forward and backward. Length-bucketed passes make almost every training chunk a
  new shape: on an H200 the first bf16 epoch of minilm on 256 pairs took 15.95 s, the
  second (all shapes seen) about 1 s. The memory-efficient kernel has no plans, so the first
  epoch runs at the speed of the second (benchmarks/gpu.py prints both).
* **Its backward returns NaN** in ``grad_q`` when a mask is passed, the width is 64 modulo
  128 and a query row's log-sum-exp is below about -88.7 (pytorch/pytorch#196678, a
  regression in torch 2.11 on H100/H200; huggingface/trl#7181 hit it through Qwen2.5's
  "massive activation" heads). That was the bf16 LoRA divergence on the Qodo-shaped Qwen2:
  "gradient norm is nan at epoch 1, step 11". The memory-efficient and math kernels are
  clean on the same inputs. Our passes also pad on the right
  (:meth:`embedding.inference.encoder.Encoder.collate`), so no query row is ever fully masked.

With a padding mask the memory-efficient kernel runs; a pass without padding (one text, or
texts of one length) runs flash attention. The switch is process-wide (PyTorch keeps the
enabled kernels in global flags, and a per-call context would race between the threads of
an embed worker): :func:`configure_attention` applies it when a model is loaded on CUDA.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def cudnn_attention_wanted(device: str) -> bool:
    """Whether our forward passes on ``device`` may use cuDNN attention: never on CUDA."""
    return not device.startswith("cuda")


def configure_attention(device: str) -> None:
    """Switch cuDNN attention off for this process when ``device`` is a CUDA device."""
    if cudnn_attention_wanted(device):
        return
    import torch

    if torch.backends.cuda.cudnn_sdp_enabled():
        torch.backends.cuda.enable_cudnn_sdp(False)
        log.info("cuDNN attention off: memory-efficient and flash kernels only (see %s)", __name__)


__all__ = ["configure_attention", "cudnn_attention_wanted"]

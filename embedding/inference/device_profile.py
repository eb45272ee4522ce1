"""How forward passes are shaped on each kind of device: token budgets, pass cost, padding.

The planner (:mod:`embedding.inference.length_batching`) cuts length-sorted texts into passes under a
padded-token budget, using a model of what a pass costs: a fixed cost (kernel launches,
Python, pooling) worth ``overhead_tokens`` padded tokens, plus each token's cost, which
attention raises by ``width / attention_width``. Those figures differ by an order of
magnitude between two CPU cores and a GPU:

* CPU (measured on minilm, two cores, benchmarks/encode.py and benchmarks/train.py): a pass
  costs about 7.2 ms + 0.037 ms a token, so the fixed cost is worth ~195 tokens, and small
  passes (4,096 tokens to encode, 1,024 to train) are best: padding costs real time.
* CUDA (measured on an H200, benchmarks/gpu.py, figures in benchmarks/RESULTS.md): a
  minilm token costs well under a microsecond while a pass's launches cost milliseconds, so
  the fixed cost is worth thousands of tokens, and the passes must be large for the GPU to
  be busy; the budgets are the best of a sweep in that benchmark.

``pad_multiple`` rounds every pass's width up (1: no rounding). Rounding makes shapes
repeat, which only matters to kernels that plan per shape (cuDNN attention, which we do
not run: :mod:`embedding.inference.attention_kernels`); the benchmark measures both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from embedding.inference.length_batching import ATTENTION_WIDTH, OVERHEAD_TOKENS

# The model the CUDA figures were measured on: minilm, hidden 384, 6 layers.
REFERENCE_HIDDEN, REFERENCE_LAYERS = 384, 6
MIN_SCALED_TRAINING_BUDGET = 16384


@dataclass(frozen=True)
class PassProfile:
    """The shape of forward passes on one kind of device."""

    encode_token_budget: int  # padded tokens per inference pass
    training_token_budget: int  # padded tokens per training chunk (with autograd)
    overhead_tokens: float  # a pass's fixed cost, in padded tokens' worth
    attention_width: float  # width at which attention doubles a token's cost
    pad_multiple: int = 1  # every pass's width is rounded up to a multiple of this
    scale_with_model: bool = False  # figures are the reference model's: see for_model

    def padded_width(self, width: int) -> int:
        """``width`` rounded up to the profile's multiple."""
        step = max(1, self.pad_multiple)
        return -(-width // step) * step

    def for_model(self, hidden: int, layers: int) -> PassProfile:
        """The profile for a model of ``hidden`` width and ``layers`` layers.

        A training chunk's activations grow with hidden x layers, so on a GPU its budget
        shrinks by that ratio to the reference model's, to no less than
        ``MIN_SCALED_TRAINING_BUDGET``. The fixed cost of a pass does not shrink for a
        larger model: on an H200 a 1.5 B Qwen2's pass is bound by the CPU launching its
        kernels (25-37 ms for one text), worth about as many tokens as minilm's. Measured
        there: the 1.5 B LoRA trained 46-51 pairs/s with 16,384-token chunks (49.8 GB peak)
        and 20 pairs/s with 8,192. CPU figures stay as they are.
        """
        if not self.scale_with_model or hidden <= 0 or layers <= 0:
            return self
        memory_ratio = REFERENCE_HIDDEN * REFERENCE_LAYERS / (hidden * layers)
        budget = int(self.training_token_budget * min(1.0, memory_ratio))
        return replace(
            self,
            training_token_budget=min(
                self.training_token_budget, max(MIN_SCALED_TRAINING_BUDGET, budget)
            ),
        )


CPU_PROFILE = PassProfile(
    encode_token_budget=4096,  # best of 2048/4096/8192/16384 on minilm (benchmarks/encode.py)
    training_token_budget=1024,  # stdlib pairs (benchmarks/train.py)
    overhead_tokens=OVERHEAD_TOKENS,  # 7.2 ms / 0.037 ms (Xeon with AMX, 2 cores, bf16)
    attention_width=ATTENTION_WIDTH,  # 0.037 / 0.000044
)

CUDA_PROFILE = PassProfile(
    # H200, minilm, benchmarks/gpu.py: encode 65,536 best of 8k-64k (3,646 texts/s against
    # 2,343-2,494); training at batch 128, 65,536 best of 4k/16k/64k (1,213 pairs/s against
    # 721 and 941; at batch 32 16k and 64k within 10 %).
    encode_token_budget=65536,
    training_token_budget=65536,
    overhead_tokens=4096.0,
    attention_width=2048.0,
    scale_with_model=True,
)


def pass_profile(device: str, hidden: int = 0, layers: int = 0) -> PassProfile:
    """The profile for a torch device string (``cpu``, ``cuda``, ``cuda:1``, ...), scaled to
    a model of ``hidden`` x ``layers`` where the device's figures scale (:meth:`for_model`)."""
    profile = CUDA_PROFILE if device.startswith("cuda") else CPU_PROFILE
    return profile.for_model(hidden, layers)


__all__ = ["CPU_PROFILE", "CUDA_PROFILE", "PassProfile", "pass_profile"]

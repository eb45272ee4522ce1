"""The training forward: texts in, embeddings out (with autograd), padded per length bucket.

A fine-tuning batch of docstring -> code pairs mixes ~20-token queries with code of up to
256 tokens. Padded as one tensor, every query is padded to the longest code: on the stdlib
pairs at batch 32, 64 texts x 256 = 16,384 token slots hold ~3,900 real tokens, and
attention (quadratic in the padded width) runs on 64 x 256^2 scores per head and layer.
Here the texts are sorted by length and cut into chunks under a padded-token budget (the
device's: 1,024 tokens on a CPU, far more on a GPU, :mod:`embedding.inference.device_profile`), each
chunk padded only to its own longest text, and the embeddings come back in input order.

Every text's embedding is the same function of its own tokens whatever it is batched with
(attention masks out padding, pooling reads the mask), so this equals one padded forward up
to float rounding - except for dropout, whose masks are drawn per chunk shape (in train mode
no two forwards agree anyway). ``tests/test_training_forward.py`` checks embeddings and
gradients in eval mode.

All chunks run inside one autocast context, so under bf16 each weight is cast once per call,
not once per chunk (autocast caches casts until its outermost context exits).

On CPU in train mode with attention dropout, attention runs as transformers' "eager"
implementation instead of SDPA: SDPA's fused CPU kernels take no dropout, so it falls back
to its math path, which makes more passes over the scores (mask, "safe" softmax) than eager
attention does; eager is about 10 % faster per step on minilm (benchmarks/train.py), and
draws the same dropout masks (tested). Only inside this call: eval and export are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from embedding.inference.length_batching import length_batches

if TYPE_CHECKING:
    import torch

    from embedding.inference.encoder import Encoder


def embed_for_training(
    encoder: Encoder,
    texts: Sequence[str],
    token_budget: int | None = None,
    task: str | None = None,
) -> torch.Tensor:
    """L2-normalized embeddings of ``texts`` in input order, one row each, with autograd.

    Tokenizes once (truncating to ``encoder.spec.max_tokens``), forwards length-sorted chunks
    of at most ``token_budget`` padded tokens (a text longer than that gets a chunk of its
    own; default: the device profile's, :mod:`embedding.inference.device_profile`), and reorders.
    Gradients flow back to every chunk.
    """
    import torch

    if not texts:
        raise ValueError("embed_for_training needs at least one text")
    sequences, _ = encoder.prepare(texts, task=task)
    profile = encoder.profile
    chunks = list(
        length_batches(
            [len(s) for s in sequences],
            len(sequences),
            token_budget or profile.training_token_budget,
            profile.overhead_tokens,
            profile.attention_width,
        )
    )
    # One autocast context around all chunks: one cast of each weight (see module docstring).
    with _training_attention(encoder.model, encoder.device), encoder.autocast():
        parts = [encoder.embed(encoder.collate([sequences[i] for i in c])) for c in chunks]
    order = torch.tensor([i for c in chunks for i in c], device=parts[0].device)
    embeddings = torch.cat(parts) if len(parts) > 1 else parts[0]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return embeddings[inverse]


@contextlib.contextmanager
def _training_attention(model: Any, device: str) -> Iterator[None]:
    """Eager attention for the duration, where SDPA would fall back to its math path.

    That is: on CPU, in train mode, with attention dropout, for a model that runs SDPA and
    can switch its implementation (transformers' ``set_attn_implementation``; custom-code
    models that cannot are left as they are). The switch costs ~0.1 ms each way.
    """
    config = getattr(model, "config", None)
    dropout = max(
        float(getattr(config, "attention_probs_dropout_prob", 0.0) or 0.0),
        float(getattr(config, "attention_dropout", 0.0) or 0.0),
    )
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # LoRA
    can_switch = getattr(type(base), "_can_set_attn_implementation", lambda: False)()
    switch = (
        model.training
        and dropout > 0
        and device.startswith("cpu")
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and can_switch
    )
    if not switch:
        yield
        return
    base.set_attn_implementation("eager")
    try:
        yield
    finally:
        base.set_attn_implementation("sdpa")


__all__ = ["embed_for_training"]

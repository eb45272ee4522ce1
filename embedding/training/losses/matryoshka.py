"""Matryoshka loss: one model trained to be good at every width it will be served at.

A spec with Matryoshka dims (jina_v3: 32 ... 1024) serves embeddings truncated to any of
them and renormalized (``Encoder.encode(truncate_dim=...)``). Training only at full width
leaves the short prefixes to chance; this loss sums the base loss over the embeddings cut to
each dim and renormalized, each with a weight (1 each by default), as sentence-transformers'
``MatryoshkaLoss`` does. It works on embeddings only, so it wraps any loss here, plain or
cached (:mod:`embedding.training.losses.cached_mnrl` hands the wrapped loss its embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from embedding.training.losses.cached_mnrl import ColumnsLoss


def truncate(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` components, L2-normalized again: what a Matryoshka model serves."""
    return F.normalize(embeddings[..., :dim], p=2, dim=-1)


def training_dims(spec_dims: Sequence[int], width: int) -> tuple[int, ...]:
    """The dims to train at: the spec's, and the full width (the default output) if missing."""
    if not spec_dims:
        raise ValueError("no Matryoshka dims: the model's spec declares none")
    bad = [d for d in spec_dims if not 0 < d <= width]
    if bad:
        raise ValueError(f"Matryoshka dims {bad} are not in 1..{width} (the model's width)")
    return tuple(sorted({*spec_dims, width}))


class MatryoshkaLoss:
    """``sum_i weight_i * base(*(truncate(column, dim_i) for column in columns))``."""

    def __init__(
        self, base: ColumnsLoss, dims: Sequence[int], weights: Sequence[float] | None = None
    ) -> None:
        if not dims:
            raise ValueError("MatryoshkaLoss needs at least one dim")
        weights = [1.0] * len(dims) if weights is None else list(weights)
        if len(weights) != len(dims):
            raise ValueError(f"{len(dims)} dims but {len(weights)} weights")
        self.base, self.dims, self.weights = base, tuple(dims), tuple(weights)

    def __call__(self, *columns: torch.Tensor) -> torch.Tensor:
        terms = [
            w * self.base(*(truncate(c, d) for c in columns))
            for d, w in zip(self.dims, self.weights, strict=True)
        ]
        return torch.stack(terms).sum()

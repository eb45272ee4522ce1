"""Cached MNRL (GradCache): the in-batch negatives of a big batch in the memory of a small one.

MNRL gets better as the batch grows (more in-batch negatives), but the rows of a batch are
not independent, so gradient accumulation cannot split it. GradCache (Gao et al. 2021,
https://arxiv.org/abs/2101.06983), as sentence-transformers'
``CachedMultipleNegativesRankingLoss`` implements it, splits the *forward passes* instead:

1. embed every text of the batch in mini-batches **without** autograd, keeping the RNG state
   before each mini-batch (dropout draws from it);
2. compute the loss on those embeddings (detached leaves that require grad) and backward it,
   which gives d loss / d embedding for every text, and the loss value;
3. embed each mini-batch again **with** autograd, under its saved RNG state (same dropout
   masks, so the same embeddings), and backward ``<embedding, cached gradient>``: by the
   chain rule, the parameters receive exactly the gradient of the whole-batch loss.

Only one mini-batch of activations is alive at a time, so memory follows ``mini_batch_size``
while the loss sees the whole batch; the price is a second forward pass per text. The loss
value and every parameter's gradient equal plain MNRL on the whole batch, and the peer's
cached loss (``tests/test_cached_mnrl.py``, 1e-5).

Unlike the peer, which cuts each column (anchors, positives, ...) into mini-batches in
order, we cut all texts of the batch together after sorting them by token count: short
docstrings share mini-batches with short docstrings and long code with long code, so little
is spent on padding. Which text sits in which mini-batch changes nothing but the padding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from embedding.inference.encoder import Encoder

# A loss over the columns of a batch (anchors, positives[, negatives]), each (rows, dim).
ColumnsLoss = Callable[..., torch.Tensor]


class RngState:
    """The random state before a forward pass, to replay it: the same dropout masks again.

    CPU always; CUDA when it is in use. Replaying runs inside ``fork_rng``, so the random
    state after the replay is what it was before it (the run's random stream, and so exact
    resume, is the same as if the replay had not happened).
    """

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        use_cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        self.cuda = torch.cuda.get_rng_state_all() if use_cuda else []

    @contextmanager
    def replay(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=range(len(self.cuda))):
            torch.set_rng_state(self.cpu)
            if self.cuda:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def gradcache_backward(
    embed_chunks: Sequence[Callable[[], torch.Tensor]],
    loss_of: Callable[[list[torch.Tensor]], torch.Tensor],
    weight: float = 1.0,
) -> torch.Tensor:
    """Backward ``weight * loss_of(embeddings of every chunk)`` into the parameters, one chunk
    of activations at a time (steps 1-3 of the module docstring); returns the loss, detached.

    ``embed_chunks[i]()`` embeds mini-batch ``i`` with autograd as the caller's context sets
    it; it must draw its randomness only from the global RNG (dropout does). ``weight``
    scales the gradients (``1 / micro-batches`` under gradient accumulation).
    """
    states: list[RngState] = []
    cached: list[torch.Tensor] = []
    for embed in embed_chunks:  # 1. no activations kept
        states.append(RngState())
        with torch.no_grad():
            cached.append(embed().detach().requires_grad_())
    with torch.enable_grad():  # 2. d loss / d embedding
        loss = loss_of(cached)
        (loss * weight).backward()
    for embed, state, leaf in zip(embed_chunks, states, cached, strict=True):  # 3.
        if leaf.grad is None:  # the loss did not use these embeddings
            continue
        with state.replay(), torch.enable_grad():
            again = embed()
        torch.dot(again.flatten().float(), leaf.grad.flatten().float()).backward()
    return loss.detach()


def length_sorted_chunks(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Indices cut into chunks of ``size`` after sorting by length (stable: deterministic)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + size] for i in range(0, len(order), size)]


def cached_mnrl_backward(
    encoder: Encoder,
    columns: Sequence[Sequence[str]],
    loss: ColumnsLoss,
    mini_batch_size: int,
    weight: float = 1.0,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Backward ``weight * loss(*embedded columns)`` with GradCache; returns the loss, detached.

    ``gather`` (data-parallel training): ``columns`` are this rank's rows only; it maps
    their ``(columns, rows, dim)`` embeddings to the global batch's, with autograd
    (:meth:`embedding.training.rank_group.RankGroup.gather_columns`), and ``loss`` scores
    that. Step 2's gradients then reach this rank's cached embeddings through the gather.

    ``columns``: the batch's texts by column (anchors, positives[, hard negatives]), all of
    one length. ``loss``: e.g. ``functools.partial(multiple_negatives_ranking_loss,
    scale=20)``, or a Matryoshka loss around it. ``mini_batch_size`` texts per forward pass.
    The encoder tokenizes (and truncates) as in a plain step; the model's train/eval mode
    decides dropout, and the encoder's precision the autocast.
    """
    if mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be a positive integer, got {mini_batch_size!r}")
    rows = len(columns[0])
    if any(len(c) != rows for c in columns):
        raise ValueError(f"columns differ in length: {[len(c) for c in columns]}")
    texts = [text for column in columns for text in column]
    sequences, _ = encoder.prepare(texts) if texts else ([], None)  # once, for both passes
    chunks = length_sorted_chunks([len(s) for s in sequences], mini_batch_size)
    # where each text's embedding lands in the concatenation of the chunks' embeddings
    position = torch.empty(len(texts), dtype=torch.long)
    position[[i for chunk in chunks for i in chunk]] = torch.arange(len(texts))

    def embed_chunk(chunk: list[int]) -> Callable[[], torch.Tensor]:
        return lambda: encoder.embed(encoder.collate([sequences[i] for i in chunk]))

    def loss_of(embedded: list[torch.Tensor]) -> torch.Tensor:
        if gather is not None:
            if embedded:
                mine = torch.cat(embedded)[position.to(embedded[0].device)]
                mine = mine.reshape(len(columns), rows, -1)
            else:  # no rows on this rank this step: it still joins the gather
                mine = torch.zeros(len(columns), 0, encoder.dim, device=encoder.device)
            return loss(*gather(mine).unbind(0))
        in_text_order = torch.cat(embedded)[position.to(embedded[0].device)]
        return loss(*in_text_order.split(rows))

    return gradcache_backward([embed_chunk(c) for c in chunks], loss_of, weight)

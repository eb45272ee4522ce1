"""One training step's parts: the seeded batches of an epoch, the training view of the
encoder, the loss of a batch and its backward pass, the finite-loss check and the
optimizer step.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from embedding.data.examples import DataError, Example
from embedding.inference.encoder import Encoder
from embedding.training.config import TrainConfig, TrainingDiverged
from embedding.training.forward import embed_for_training
from embedding.training.guide import GuideVectors, guided_mask
from embedding.training.losses import (
    MatryoshkaLoss,
    cached_mnrl_backward,
    false_negative_mask,
    multiple_negatives_ranking_loss,
    training_dims,
    triplet_loss,
)
from embedding.training.rank_group import RankGroup


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """This epoch's shuffled batches: a function of ``(seed, epoch)`` only, so resume repeats it.

    A last batch of a single row joins the one before: alone it would be a batch with no
    in-batch negatives (its MNRL loss is exactly 0) and would skew the epoch's mean.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


def training_view(encoder: Encoder, max_tokens: int | None) -> Encoder:
    """The encoder as training tokenizes: the same model, a spec with a lower token cap.

    A shallow copy, so truncation happens per text *before* padding (keeping the closing
    special token, and correct for left-padding tokenizers), and the encoder itself, whose
    spec eval and export use, is left alone.
    """
    if not max_tokens or max_tokens >= encoder.spec.max_tokens:
        return encoder
    view = copy.copy(encoder)
    view.spec = replace(encoder.spec, max_tokens=max_tokens)
    return view


def embeddings_loss(
    encoder: Encoder,
    config: TrainConfig,
    rows: Sequence[Example],
    guide: GuideVectors | None = None,
) -> Callable[..., torch.Tensor]:
    """The configured loss over the embedded columns of ``rows`` (anchors, positives[,
    negatives]), summed over the spec's Matryoshka dims with ``matryoshka``. MNRL never
    counts the anchor's own positive text, seen again in the batch, as a negative, nor
    (``guided_filter``, with the run's ``guide``) a candidate the starting model scores
    near or above that positive (:mod:`embedding.training.guide`)."""
    loss: Callable[..., torch.Tensor]
    width = len(rows[0])
    if config.loss == "triplet":
        if width != 3:
            raise DataError("loss 'triplet' needs triplets (anchor, positive, negative)")
        loss = functools.partial(triplet_loss, margin=config.margin)
    else:  # mnrl, cached_mnrl
        columns = [[row[i] for row in rows] for i in range(width)]
        exclude = false_negative_mask(columns)
        if config.guided_filter and guide is not None:
            guided = guided_mask(guide, columns)
            if guided is not None:
                exclude = guided if exclude is None else exclude | guided
        loss = functools.partial(
            multiple_negatives_ranking_loss,
            scale=config.scale,
            exclude=exclude,
            symmetric=config.symmetric_loss,
        )
    if config.matryoshka:
        loss = MatryoshkaLoss(loss, training_dims(encoder.spec.matryoshka_dims, encoder.dim))
    return loss


def batch_loss(
    encoder: Encoder,
    rows: Sequence[Example],
    config: TrainConfig,
    group: RankGroup | None = None,
    guide: GuideVectors | None = None,
) -> torch.Tensor:
    """Embed every text of the batch together, then split and score.

    All 2B or 3B texts go through one :func:`embed_for_training` call, which pads them per
    length bucket instead of per column: short queries are not padded to the longest code
    (on docstring -> code pairs that was three quarters of the token slots).

    In a data-parallel ``group`` (:mod:`embedding.training.rank_group`) this rank embeds
    its shard of the rows only, and the loss scores the global batch, gathered with
    gradients from every rank.
    """
    width = len(rows[0])
    mine = rows if group is None else [rows[i] for i in group.shard(len(rows))]
    texts = [row[i] for i in range(width) for row in mine]  # column-major: a's, p's, n's
    view = training_view(encoder, config.max_tokens)
    loss = embeddings_loss(encoder, config, rows, guide)
    if group is None:
        return loss(*embed_for_training(view, texts).split(len(rows)))
    if texts:
        local = embed_for_training(view, texts).reshape(width, len(mine), -1)
    else:  # a short last batch: fewer rows than ranks
        local = torch.zeros(width, 0, encoder.dim, device=encoder.device, requires_grad=True)
    return loss(*group.gather_columns(local, len(rows)).unbind(0))


def batch_backward(
    encoder: Encoder,
    rows: Sequence[Example],
    config: TrainConfig,
    weight: float,
    group: RankGroup | None = None,
    guide: GuideVectors | None = None,
) -> float:
    """The batch's loss; its gradient, times ``weight``, is added to the parameters' ``.grad``.

    ``cached_mnrl`` runs its forward and backward passes itself, in mini-batches (GradCache,
    :mod:`embedding.training.losses.cached_mnrl`); the other losses embed the batch in one forward.
    """
    if config.loss == "cached_mnrl":
        mine = rows if group is None else [rows[i] for i in group.shard(len(rows))]
        columns = [[row[i] for row in mine] for i in range(len(rows[0]))]
        view = training_view(encoder, config.max_tokens)
        loss = embeddings_loss(encoder, config, rows, guide)
        gather = None if group is None else lambda local: group.gather_columns(local, len(rows))
        return float(
            cached_mnrl_backward(view, columns, loss, config.mini_batch_size, weight, gather)
        )
    loss_value = batch_loss(encoder, rows, config, group, guide)
    (loss_value * weight).backward()
    return float(loss_value.detach())


def check_finite_loss(value: float, epoch: int, step: int, config: TrainConfig) -> None:
    """A NaN or infinite loss ends the run as a clear failure, before its backward lands."""
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"loss is {value} at epoch {epoch}, step {step}: training stopped "
            f"(lr {config.lr:g}; try a lower learning rate)"
        )


def optimizer_step(
    encoder: Encoder,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    epoch: int,
    step: int,
    group: RankGroup | None = None,
) -> float:
    """Clip, step, advance the schedule, clear the gradients; returns the lr that was used.

    A non-finite gradient norm refuses the step before the weights are touched: the last
    checkpoint stays a model that was trained, not one a NaN wrote over. In a ``group`` the
    ranks' gradients are averaged first (all ranks then take the same step).
    """
    if group is not None:
        group.average_gradients(encoder.model)
    norm = torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), config.max_grad_norm)
    if not math.isfinite(float(norm)):
        raise TrainingDiverged(
            f"gradient norm is {float(norm)} at epoch {epoch}, step {step}: "
            "training stopped before the weights were touched"
        )
    lr_used = float(scheduler.get_last_lr()[0])
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return lr_used

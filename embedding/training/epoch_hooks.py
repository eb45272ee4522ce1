"""What runs around the epochs: the eval set and its evaluation, keeping and restoring
the best epoch's weights, and why a run stopped before its last epoch.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from embedding.data.examples import Example
from embedding.evaluation.metrics import evaluate, evaluate_at_dims
from embedding.inference.encoder import Encoder
from embedding.training.checkpoints import (
    epoch_folder,
    load_weights,
)
from embedding.training.config import EpochStats, TrainConfig
from embedding.training.epoch_selection import Selection

log = logging.getLogger(__name__)


def eval_sample(rows: Sequence[Example], limit: int, seed: int) -> list[Example]:
    """At most ``limit`` training rows to evaluate on, drawn with ``seed`` (the same rows on
    a resume), in their original order."""
    if len(rows) <= limit:
        return list(rows)
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def eval_set(
    rows: Sequence[Example], validation: Sequence[Example] | None, config: TrainConfig
) -> tuple[list[Example], str]:
    """The rows "before and after" are measured on, and what they are (``eval_source``).

    The validation rows when given; otherwise a seeded sample of the training rows, so a
    large training set is never re-encoded. Early stopping needs a validation set: without
    one no epoch is evaluated, so asking for it is refused before anything is loaded.
    """
    if validation is not None:
        return list(validation), "validation"
    if config.early_stopping_patience > 0:
        raise ValueError(
            "early_stopping_patience needs a validation set (eval_examples): "
            "without one no epoch is evaluated"
        )
    sample = eval_sample(rows, config.eval_sample_rows, config.seed)
    return sample, f"train-sample:{len(sample)} of {len(rows)}"


def cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights, copied to the CPU (the best epoch, when no checkpoint keeps it)."""
    return {
        n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad
    }


def restore_epoch(
    model: torch.nn.Module,
    epoch: int,
    checkpoint_dir: Path | None,
    kept: dict[str, torch.Tensor] | None,
) -> bool:
    """Put epoch ``epoch``'s weights back; False when they are nowhere to be found."""
    if kept is not None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in kept.items():
                params[name].copy_(tensor)
        return True
    folder = epoch_folder(checkpoint_dir, epoch) if checkpoint_dir is not None else None
    if folder is None or not (folder / "model.safetensors").is_file():
        return False
    load_weights(folder, model)
    return True


def evaluate_rows(
    encoder: Encoder, rows: Sequence[Example], config: TrainConfig
) -> dict[str, float]:
    """The eval metrics; with ``matryoshka`` also at each of the spec's dims (``mrr@10@dim256``)."""
    if config.matryoshka:
        return evaluate_at_dims(encoder, rows, encoder.spec.matryoshka_dims)
    return evaluate(encoder, rows)


def exhausted_reason(history: list[dict[str, Any]]) -> str | None:
    """Why training stops when the last epoch's mean loss is exactly zero, else None.

    A triplet loss is a hinge: zero means every row of every batch already meets the
    margin, so the gradient is zero and the data has nothing left to teach. Another epoch
    would only apply AdamW's weight decay (and the optimizer's momentum), which moves the
    weights without a loss to pull them back: on the seed's five triplets at lr 1e-4 the
    losses went 0.088, 0.0, 0.0074, a curve that rises after reaching zero. Stopping there
    is what the data supports; the reason is recorded with the result.
    """
    if not history or history[-1]["loss"] != 0.0:
        return None
    epoch = history[-1]["epoch"]
    return (
        f"data exhausted: every training row met the margin in epoch {epoch} (loss 0), so "
        "there was nothing left to learn; stopped there"
    )


def stop_reason(
    stopped: bool,
    stopped_early: bool,
    exhausted: str | None,
    epochs: list[EpochStats],
    planned: int,
    selection: Selection,
) -> str | None:
    """Why a finished run trained fewer epochs than asked (None when it trained them all)."""
    if stopped or not epochs or epochs[-1].epoch >= planned:
        return None
    if stopped_early:
        return (
            f"early stop: {selection.metric} did not improve for the patience's epochs "
            f"after epoch {selection.best_epoch}"
        )
    return exhausted


def take_best(
    encoder: Encoder,
    selection: Selection,
    last: int | None,
    keep_best: bool,
    checkpoint_dir: Path | None,
    best_state: dict[str, torch.Tensor] | None,
) -> int | None:
    """Put the best epoch's weights in place of the last one's; returns the epoch exported.

    A best epoch whose checkpoint is gone (pruned by a version that did not spare it) cannot
    come back: the last epoch is exported, with a warning, and the result says so.
    """
    best = selection.best_epoch
    if not keep_best or best is None or best == last:
        return last
    if restore_epoch(encoder.model, best, checkpoint_dir, best_state):
        return best
    log.warning(
        "best epoch %s (%s %.4f) has no checkpoint left: exporting the last epoch, %s",
        best,
        selection.metric,
        selection.best_value,
        last,
    )
    return last

"""What a training run is given and what it gives back: :class:`TrainConfig`, the
per-epoch :class:`EpochStats`, the :class:`TrainResult`, and the two ways a run refuses to go on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from embedding.training import hyperparameters as hp
from embedding.training.losses import (
    DEFAULT_MNRL_SCALE,
)


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; the message names epoch and step."""


class CheckpointMismatch(ValueError):
    """``resume`` found checkpoints of another run (other settings, model or data)."""


@dataclass
class TrainConfig:
    """How to train. The fields a user sets take their defaults and bounds from
    :mod:`embedding.training.hyperparameters`; the rest are the loop's own knobs."""

    loss: str = hp.LOSS.default
    epochs: int = hp.EPOCHS.default
    lr: float = hp.LR.default
    batch_size: int = hp.BATCH_SIZE.default
    margin: float = hp.MARGIN.default  # triplet loss, cosine distance (see losses.py)
    scale: float = DEFAULT_MNRL_SCALE  # mnrl
    warmup_ratio: float = 0.1  # share of optimizer steps with a linearly rising LR
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01
    seed: int = hp.SEED.default
    precision: str | None = None  # None: the spec's default (bf16 autocast where supported)
    gradient_checkpointing: bool = False
    lora: bool | None = None  # None: the spec decides (large models train adapters only)
    lora_r: int = 8
    max_tokens: int | None = hp.MAX_TOKENS.default
    mini_batch_size: int = hp.MINI_BATCH_SIZE.default  # cached_mnrl: texts per forward pass
    matryoshka: bool = hp.MATRYOSHKA.default  # also train (and evaluate) at the spec's dims
    early_stopping_patience: int = hp.EARLY_STOPPING_PATIENCE.default
    select_best_epoch: bool = hp.SELECT_BEST_EPOCH.default
    symmetric_loss: bool = hp.SYMMETRIC_LOSS.default  # mnrl: code -> query as well
    hard_negatives: int = hp.HARD_NEGATIVES.default  # pairs: mined before training (guide.py)
    guided_filter: bool = hp.GUIDED_FILTER.default  # mnrl: the starting model masks candidates
    hard_batches: bool = hp.HARD_BATCHES.default  # mnrl: batches of alike pairs (guide.py)
    hard_batch_share: float = 1.0  # of each hard batch, the alike pairs; random ones fill it
    eval_sample_rows: int = hp.DEFAULT_EVAL_SAMPLE_ROWS  # the bound without a validation set
    dropout: bool = True  # False: no dropout at all (tests comparing two runs exactly)

    def check(self) -> None:
        """Refuse settings that cannot train, all problems in one message."""
        problems = hp.problems(asdict(self))

        def positive_int(name: str, value: object) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                problems.append(f"{name} must be a positive integer, got {value!r}")

        def positive_number(name: str, value: object) -> None:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and value > 0):  # type: ignore[arg-type]
                problems.append(f"{name} must be a finite number > 0, got {value!r}")

        positive_int("grad_accum", self.grad_accum)
        positive_number("scale", self.scale)
        positive_number("max_grad_norm", self.max_grad_norm)
        positive_int("lora_r", self.lora_r)
        positive_int("eval_sample_rows", self.eval_sample_rows)
        if not (isinstance(self.warmup_ratio, int | float) and 0 <= self.warmup_ratio < 1):
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not (isinstance(self.weight_decay, int | float) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        mnrl_only = [name for name in hp.LEVERS if getattr(self, name) and self.loss == "triplet"]
        if mnrl_only:
            problems.append(
                f"{', '.join(mnrl_only)} train with loss 'mnrl' or 'cached_mnrl', not 'triplet'"
            )
        if self.precision not in (None, "fp32", "bf16", "fp16"):
            problems.append(f"precision must be fp32, bf16, fp16 or None, got {self.precision!r}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class EpochStats:
    """What ``on_epoch_end`` receives after each epoch (also stored in every checkpoint)."""

    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch's batches
    lr: float  # the learning rate of the epoch's last optimizer step
    samples_per_s: float
    duration_s: float  # training only: without eval and checkpoint
    eval: dict[str, float] = field(default_factory=dict)  # only with a validation set


@dataclass
class TrainResult:
    epoch_losses: list[float]
    epochs: list[EpochStats]
    eval_before: dict[str, float]
    eval_after: dict[str, float]
    output_dir: str | None
    seconds: float  # training loop time (excludes loading the model and the first eval)
    settings: dict[str, Any]
    prepare_seconds: float = 0.0  # the recipe's preparation (guide.py): mining, guide vectors
    preparation: list[str] = field(default_factory=list)  # what it did, a sentence each
    stopped: bool = False  # should_stop() or stop_after_epoch ended it early: no export
    eval_source: str = ""  # "validation" or "train-sample:N of M": what eval_* measured
    best_epoch: int | None = None  # best validation metric (None: no per-epoch eval)
    selected_by: str | None = None  # that metric: "mrr@10" or "triplet_accuracy"
    exported_epoch: int | None = None  # whose weights are in output_dir (the best, or last)
    stopped_early: bool = False  # early_stopping_patience ended it (exported all the same)
    # Why it ended before ``config.epochs`` (early stop, or the data exhausted); None: it ran
    # them all (or ``stopped`` interrupted it).
    stop_reason: str | None = None

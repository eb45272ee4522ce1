"""Fine-tuning: one readable loop, top to bottom.

    examples -> validate (before anything is loaded) -> choose the eval set
    -> load a *fresh* copy of the model -> (LoRA adapters for large specs) -> eval before
    -> for each epoch: shuffle (seeded) -> batches -> embed every text of the batch
       (length buckets, embedding/training/forward.py) -> loss -> backward -> clip
       -> fused AdamW step -> linear warmup/decay
       (cached_mnrl: forward and backward in mini-batches, GradCache; see losses/)
    -> end of epoch: mean loss, eval (with a validation set), checkpoint (atomic),
       ``on_epoch_end`` callback, early stop after ``early_stopping_patience`` epochs
       without a gain, or (``stop_when_exhausted``, the CLI) once an epoch's loss is
       exactly zero (the data is exhausted: :func:`exhausted_reason`); ``stop_reason``
       says which
    -> the best epoch's weights back in place -> eval after -> export in the
       sentence-transformers layout (LoRA merged into the base)

The eval set: the validation rows (``eval_examples``) when given; otherwise a seeded sample
of at most ``eval_sample_rows`` training rows, so "before and after" never re-encodes a
large training set. Results say which (``eval_source``: ``"validation"`` or
``"train-sample:N of M"``). Only a validation set is evaluated after every epoch.

Best epoch: with a validation set, the epoch with the best MRR@10 (pairs) or triplet
accuracy (triplets) is the one exported (:mod:`embedding.training.epoch_selection`; ``select_best_epoch``
off exports the last). Its weights come back from its own checkpoint, which pruning spares:
no second copy of the model in memory, and the checkpoint has to be on disk anyway for the
best to survive a resume. Only a run without a checkpoint directory (no resume possible)
keeps a CPU copy of the best epoch's trainable weights instead.

Which model is trained: the trainer always loads its own copy of the weights from disk
(:func:`load_for_training`), also when handed an :class:`Encoder`; a model being served is
never touched, and in-memory changes to a passed encoder are not picked up.

Exact resume: data order is a function of ``(seed, epoch)`` only; dropout RNG, optimizer and
scheduler come back from the checkpoint. A run interrupted after epoch k and resumed gives
the same per-epoch losses as an uninterrupted one (to 1e-6 in fp32 on CPU; tested). A
checkpoint directory remembers a fingerprint of the run (settings, model, data), so a resume
with other settings or data is refused instead of silently mixing two runs.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedding.data.examples import DataError, Example, row_kind, validate_examples
from embedding.evaluation.metrics import evaluate, evaluate_at_dims
from embedding.inference.encoder import Encoder
from embedding.models.specs import ModelSpec, get_spec
from embedding.models.st_layout import export_sentence_transformers
from embedding.training import hyperparameters as hp
from embedding.training.checkpoints import (
    clear_checkpoints,
    epoch_folder,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    read_run,
    save_checkpoint,
    write_run,
)
from embedding.training.epoch_selection import Selection, select
from embedding.training.forward import embed_for_training
from embedding.training.losses import (
    DEFAULT_MNRL_SCALE,
    MatryoshkaLoss,
    cached_mnrl_backward,
    false_negative_mask,
    multiple_negatives_ranking_loss,
    training_dims,
    triplet_loss,
)

log = logging.getLogger(__name__)


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
    eval_sample_rows: int = hp.DEFAULT_EVAL_SAMPLE_ROWS  # the bound without a validation set

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
    stopped: bool = False  # should_stop() or stop_after_epoch ended it early: no export
    eval_source: str = ""  # "validation" or "train-sample:N of M": what eval_* measured
    best_epoch: int | None = None  # best validation metric (None: no per-epoch eval)
    selected_by: str | None = None  # that metric: "mrr@10" or "triplet_accuracy"
    exported_epoch: int | None = None  # whose weights are in output_dir (the best, or last)
    stopped_early: bool = False  # early_stopping_patience ended it (exported all the same)
    # Why it ended before ``config.epochs`` (early stop, or the data exhausted); None: it ran
    # them all (or ``stopped`` interrupted it).
    stop_reason: str | None = None


# --------------------------------------------------------------------- setup
def load_for_training(
    model: str | Path | ModelSpec | Encoder, precision: str | None = None
) -> Encoder:
    """A fresh fp32-weight copy from disk: training never touches a served model's weights.

    Given an :class:`Encoder`, its spec is loaded again on its device; its in-memory weights
    are neither used nor changed.
    """
    if isinstance(model, Encoder):
        model, device = model.spec, model.device
    else:
        device = "auto"
    # Per-task adapters stay out: LoRA fine-tuning trains its own adapter on the bare base.
    encoder = Encoder.load(model, device=device, precision=precision, task_adapters=False)
    encoder.inference_twin = False  # evaluation between epochs casts per call instead
    return encoder


def _apply_lora(encoder: Encoder, rank: int) -> None:
    """Wrap the model in LoRA adapters on every linear layer; the base weights freeze."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
    encoder.model = get_peft_model(encoder.model, config)


def _enable_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in backward (less memory, ~30 % more time); non-reentrant."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # older transformers
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW on the trainable parameters; no weight decay on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # fused=True runs the whole update as one kernel: on minilm's 22.7 M parameters the step
    # takes 15-19 ms instead of 90-106 ms with the default implementation (measured, 2 cores).
    # Not every device/dtype has it; then the default implementation.
    try:
        return torch.optim.AdamW(groups, lr=config.lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=config.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> Any:
    """Linear warmup over ``warmup_ratio`` of the steps, then linear decay towards zero.

    Not ``transformers.get_linear_schedule_with_warmup``, because it cannot give the same LR
    per step: it gives warmup step ``s`` the factor ``s / w``, so the first optimizer step
    runs at LR 0 and the ramp peaks one step later; here it is ``(s + 1) / w``, so the first
    step already learns (and the peak holds for steps ``w - 1`` and ``w``). No choice of its
    two arguments reproduces that, and switching would change every run with warmup (the
    default) and the LRs recorded per epoch. Without warmup the two are identical
    (tests/test_training.py checks both).
    """
    warmup = max(1, int(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def eval_sample(rows: Sequence[Example], limit: int, seed: int) -> list[Example]:
    """At most ``limit`` training rows to evaluate on, drawn with ``seed`` (the same rows on
    a resume), in their original order."""
    if len(rows) <= limit:
        return list(rows)
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def _cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights, copied to the CPU (the best epoch, when no checkpoint keeps it)."""
    return {
        n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad
    }


def _restore(
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


# ------------------------------------------------------------------- batches
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


def _check_loss_fits(rows: Sequence[Example], config: TrainConfig) -> None:
    if config.loss == "triplet" and len(rows[0]) != 3:
        raise DataError(
            "loss 'triplet' needs triplets (anchor, positive, negative); "
            f"these rows are {row_kind(len(rows[0]))}s: use loss 'mnrl' or 'cached_mnrl'"
        )


def _check_matryoshka(model: str | Path | ModelSpec | Encoder, config: TrainConfig) -> None:
    """``matryoshka`` needs a spec that declares its dims; refused before anything loads."""
    if not config.matryoshka:
        return
    spec = model.spec if isinstance(model, Encoder) else model
    spec = spec if isinstance(spec, ModelSpec) else get_spec(spec)
    if not spec.matryoshka_dims:
        raise ValueError(
            f"matryoshka: model {spec.name!r} declares no Matryoshka dims, so there is no "
            "width to train at but its full one; train without matryoshka"
        )


def _training_view(encoder: Encoder, max_tokens: int | None) -> Encoder:
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
    encoder: Encoder, config: TrainConfig, rows: Sequence[Example]
) -> Callable[..., torch.Tensor]:
    """The configured loss over the embedded columns of ``rows`` (anchors, positives[,
    negatives]), summed over the spec's Matryoshka dims with ``matryoshka``. MNRL never
    counts the anchor's own positive text, seen again in the batch, as a negative."""
    loss: Callable[..., torch.Tensor]
    width = len(rows[0])
    if config.loss == "triplet":
        if width != 3:
            raise DataError("loss 'triplet' needs triplets (anchor, positive, negative)")
        loss = functools.partial(triplet_loss, margin=config.margin)
    else:  # mnrl, cached_mnrl
        columns = [[row[i] for row in rows] for i in range(width)]
        exclude = false_negative_mask(columns)
        loss = functools.partial(
            multiple_negatives_ranking_loss, scale=config.scale, exclude=exclude
        )
    if config.matryoshka:
        loss = MatryoshkaLoss(loss, training_dims(encoder.spec.matryoshka_dims, encoder.dim))
    return loss


def batch_loss(encoder: Encoder, rows: Sequence[Example], config: TrainConfig) -> torch.Tensor:
    """Embed every text of the batch together, then split and score.

    All 2B or 3B texts go through one :func:`embed_for_training` call, which pads them per
    length bucket instead of per column: short queries are not padded to the longest code
    (on docstring -> code pairs that was three quarters of the token slots).
    """
    width = len(rows[0])
    texts = [row[i] for i in range(width) for row in rows]  # column-major: a's, p's, n's
    view = _training_view(encoder, config.max_tokens)
    embeddings = embed_for_training(view, texts)
    return embeddings_loss(encoder, config, rows)(*embeddings.split(len(rows)))


def batch_backward(
    encoder: Encoder, rows: Sequence[Example], config: TrainConfig, weight: float
) -> float:
    """The batch's loss; its gradient, times ``weight``, is added to the parameters' ``.grad``.

    ``cached_mnrl`` runs its forward and backward passes itself, in mini-batches (GradCache,
    :mod:`embedding.training.losses.cached_mnrl`); the other losses embed the batch in one forward.
    """
    if config.loss == "cached_mnrl":
        columns = [[row[i] for row in rows] for i in range(len(rows[0]))]
        view = _training_view(encoder, config.max_tokens)
        loss = embeddings_loss(encoder, config, rows)
        return float(cached_mnrl_backward(view, columns, loss, config.mini_batch_size, weight))
    loss_value = batch_loss(encoder, rows, config)
    (loss_value * weight).backward()
    return float(loss_value.detach())


def _evaluate(encoder: Encoder, rows: Sequence[Example], config: TrainConfig) -> dict[str, float]:
    """The eval metrics; with ``matryoshka`` also at each of the spec's dims (``mrr@10@dim256``)."""
    if config.matryoshka:
        return evaluate_at_dims(encoder, rows, encoder.spec.matryoshka_dims)
    return evaluate(encoder, rows)


# ------------------------------------------------------- run identity (resume)
def _model_name(model: str | Path | ModelSpec | Encoder) -> str:
    if isinstance(model, Encoder):
        return model.spec.name
    return model.name if isinstance(model, ModelSpec) else str(model)


def _sha256(rows: Sequence[Example] | None) -> str | None:
    if rows is None:
        return None
    return hashlib.sha256(json.dumps(list(rows), ensure_ascii=False).encode()).hexdigest()


def _fingerprint(
    model_name: str,
    config: TrainConfig,
    rows: Sequence[Example],
    validation: Sequence[Example] | None,
) -> dict[str, Any]:
    return {
        "model": model_name,
        "config": asdict(config),
        "rows": len(rows),
        "data_sha256": _sha256(rows),
        # The best epoch so far was chosen on these rows: another set would mix two scales.
        "eval_sha256": _sha256(validation),
    }


def _check_same_run(checkpoint_dir: Path, fingerprint: dict[str, Any]) -> None:
    saved = (read_run(checkpoint_dir) or {}).get("fingerprint")
    if saved is None:  # checkpoints written before fingerprints existed
        return
    differ = [k for k in ("model", "rows", "data_sha256") if saved.get(k) != fingerprint[k]]
    if "eval_sha256" in saved and saved["eval_sha256"] != fingerprint["eval_sha256"]:
        differ.append("eval_sha256")  # (absent: written before the validation set counted)
    # A setting added since the checkpoint was written counts as its default there.
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    saved_config = saved.get("config", {})
    differ += [
        f"config.{k}"
        for k, v in fingerprint["config"].items()
        if saved_config.get(k, defaults.get(k)) != v
    ]
    if differ:
        raise CheckpointMismatch(
            f"{checkpoint_dir} holds checkpoints of another run (differs in {', '.join(differ)}); "
            "resume with the same model, data and settings, or start fresh without resume"
        )


# ---------------------------------------------------------------- the loop
def finetune(
    model: str | Path | ModelSpec | Encoder,
    examples: Sequence[Sequence[str]],
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    eval_examples: Sequence[Sequence[str]] | None = None,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    stop_after_epoch: int | None = None,
    checkpoint_every_steps: int = 0,
    checkpoint_every_s: float = 0.0,
    on_checkpoint: Callable[[Path, int, int], None] | None = None,
    stop_when_exhausted: bool = False,
) -> TrainResult:
    """Train, checkpoint every epoch, export. See the module docstring for the shape of it.

    ``examples``: triplets for ``loss="triplet"``, pairs or triplets for ``"mnrl"`` (the
    third text is a hard negative). ``eval_examples``, the validation set, is evaluated
    before, after every epoch (which chooses the best epoch and stops early) and after;
    without it a seeded sample of at most ``config.eval_sample_rows`` training rows is
    evaluated before and after only. ``on_step(n_rows, loss)`` after every batch;
    ``should_stop()`` is asked before every batch and ends the run without export (resume
    continues it); ``stop_after_epoch`` simulates an interruption (tests). On resume,
    ``on_epoch_end`` is called again for the epochs already done, so callers that upsert
    lose nothing. An early stop (``early_stopping_patience``) is a finish: it exports.

    Inside an epoch a checkpoint is also written every ``checkpoint_every_steps`` optimizer
    steps or ``checkpoint_every_s`` seconds (0: never), and at once when ``should_stop()``
    ends the run mid-epoch; resume continues at the next batch, with the same losses as an
    uninterrupted run. ``on_checkpoint(path, finished_epochs, step)`` after each one.

    ``stop_when_exhausted``: end (and export) once an epoch's loss is exactly zero
    (:func:`exhausted_reason`), recorded in ``stop_reason``. ``embedctl finetune`` asks for
    it, so a user running the seed's check by hand sees a decreasing curve; a submitted job
    trains the epochs it was given (its caller set ``n_epochs``, and its history is the
    record of them).
    """
    # 1. Refuse bad settings and data before anything is loaded.
    config = config or TrainConfig()
    config.check()
    rows = validate_examples(examples)
    _check_loss_fits(rows, config)
    _check_matryoshka(model, config)
    validation = validate_examples(eval_examples, where="eval row") if eval_examples else None
    if validation is not None:
        eval_rows, eval_source = validation, "validation"
    else:
        if config.early_stopping_patience > 0:
            raise ValueError(
                "early_stopping_patience needs a validation set (eval_examples): "
                "without one no epoch is evaluated"
            )
        eval_rows = eval_sample(rows, config.eval_sample_rows, config.seed)
        eval_source = f"train-sample:{len(eval_rows)} of {len(rows)}"
    keep_best = validation is not None and config.select_best_epoch
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
    fingerprint = _fingerprint(_model_name(model), config, rows, validation)
    found = latest_checkpoint(checkpoint_dir) if resume else None
    if found is not None:
        _check_same_run(checkpoint_dir, fingerprint)  # type: ignore[arg-type]
    elif checkpoint_dir is not None:
        clear_checkpoints(checkpoint_dir)

    # 2. Our own copy of the model; LoRA for large specs; optimizer and schedule.
    _seed_everything(config.seed)
    encoder = load_for_training(model, config.precision)
    use_lora = encoder.spec.lora_for_finetune if config.lora is None else config.lora
    if config.gradient_checkpointing:
        _enable_checkpointing(encoder.model)
    if use_lora:
        _apply_lora(encoder, config.lora_r)
    batches_per_epoch = len(epoch_batches(len(rows), config.batch_size, config.seed, 1))
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    optimizer = make_optimizer(encoder.model, config)
    scheduler = make_scheduler(optimizer, steps_per_epoch * config.epochs, config.warmup_ratio)

    # 3. Resume (weights, optimizer, scheduler, RNG, history) or evaluate the starting point.
    history: list[dict[str, Any]] = []
    start_epoch = 1
    partial: dict[str, Any] | None = None
    if found is not None:
        trainer = load_checkpoint(found, encoder.model, optimizer, scheduler)
        history, start_epoch = trainer["history"], trainer["epoch"] + 1
        partial = trainer.get("partial")
        run = read_run(checkpoint_dir) or {}  # type: ignore[arg-type]
        eval_before = run.get("eval_before") or trainer.get("eval_before", {})
        for done in history:
            if on_epoch_end:
                on_epoch_end(EpochStats(**done))
    else:
        encoder.model.eval()
        eval_before = _evaluate(encoder, eval_rows, config)
        if checkpoint_dir is not None:
            write_run(checkpoint_dir, {"fingerprint": fingerprint, "eval_before": eval_before})

    # 4. The epochs (none when a resumed run had already stopped early).
    stopped = False
    selection = select(history)
    stopped_early = selection.patience_exhausted(config.early_stopping_patience)
    exhausted = exhausted_reason(history) if stop_when_exhausted else None
    best_state: dict[str, torch.Tensor] | None = None  # only without a checkpoint directory
    started = last_save = time.perf_counter()

    def kept_folder() -> str | None:
        """The best epoch's checkpoint, spared by pruning: the export reads it back."""
        if not keep_best or selection.best_epoch is None or checkpoint_dir is None:
            return None
        return epoch_folder(checkpoint_dir, selection.best_epoch).name

    def save_inside_epoch(
        epoch: int, step: int, losses: list[float], seen: int, lr: float, spent: float
    ) -> None:
        nonlocal last_save
        if checkpoint_dir is None:
            return
        part = {"step": step, "losses": losses, "seen": seen, "lr": lr, "duration_s": spent}
        path = save_checkpoint(
            checkpoint_dir,
            epoch - 1,
            encoder.model,
            optimizer,
            scheduler,
            history,
            part,
            keep=kept_folder(),
        )
        last_save = time.perf_counter()
        if on_checkpoint:
            on_checkpoint(path, epoch - 1, step)

    remaining = () if stopped_early or exhausted else range(start_epoch, config.epochs + 1)
    for epoch in remaining:
        encoder.model.train()
        epoch_start, losses, seen, lr_used = time.perf_counter(), [], 0, 0.0
        done_before, earlier_s = 0, 0.0
        if partial is not None:  # resume inside this epoch, at the batch after the checkpoint
            done_before, losses, seen = partial["step"], list(partial["losses"]), partial["seen"]
            lr_used, earlier_s, partial = partial["lr"], partial["duration_s"], None
        batches = epoch_batches(len(rows), config.batch_size, config.seed, epoch)
        saved_at_step = done_before

        for step, batch in enumerate(batches, start=1):
            if step <= done_before:
                continue
            if should_stop is not None and should_stop():
                stopped = True
                # At a step boundary with work done: keep it (a warm shutdown resumes here).
                at_boundary = (step - 1) % config.grad_accum == 0
                if at_boundary and step - 1 > saved_at_step:
                    spent = earlier_s + time.perf_counter() - epoch_start
                    save_inside_epoch(epoch, step - 1, losses, seen, lr_used, spent)
                break
            # Accumulate over `grad_accum` micro-batches; a short last group is averaged over
            # its own size so that every optimizer step sees a mean gradient.
            group_start = (step - 1) // config.grad_accum * config.grad_accum
            group_size = min(config.grad_accum, len(batches) - group_start)
            with torch.enable_grad():
                value = batch_backward(encoder, [rows[i] for i in batch], config, 1 / group_size)
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss is {value} at epoch {epoch}, step {step}: training stopped "
                    f"(lr {config.lr:g}; try a lower learning rate)"
                )
            if step - group_start == group_size:
                norm = torch.nn.utils.clip_grad_norm_(
                    encoder.model.parameters(), config.max_grad_norm
                )
                if not math.isfinite(float(norm)):
                    raise TrainingDiverged(
                        f"gradient norm is {float(norm)} at epoch {epoch}, step {step}: "
                        "training stopped before the weights were touched"
                    )
                lr_used = float(scheduler.get_last_lr()[0])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(value)
            seen += len(batch)
            if on_step:
                on_step(len(batch), value)
            group_done = step - group_start == group_size
            due = (
                checkpoint_every_steps > 0
                and (step - saved_at_step) // config.grad_accum >= checkpoint_every_steps
            ) or (checkpoint_every_s > 0 and time.perf_counter() - last_save >= checkpoint_every_s)
            if group_done and due and step < len(batches):
                spent = earlier_s + time.perf_counter() - epoch_start
                save_inside_epoch(epoch, step, losses, seen, lr_used, spent)
                saved_at_step = step
        if stopped:
            break
        encoder.model.eval()
        duration = earlier_s + time.perf_counter() - epoch_start
        stats = EpochStats(
            epoch=epoch,
            loss=statistics.fmean(losses),
            lr=lr_used,
            samples_per_s=seen / duration if duration > 0 else 0.0,
            duration_s=duration,
            eval=_evaluate(encoder, eval_rows, config) if validation is not None else {},
        )
        history.append(asdict(stats))
        selection = select(history)
        if checkpoint_dir is not None:
            path = save_checkpoint(
                checkpoint_dir,
                epoch,
                encoder.model,
                optimizer,
                scheduler,
                history,
                keep=kept_folder(),
            )
            last_save = time.perf_counter()
            if on_checkpoint:
                on_checkpoint(path, epoch, 0)
        elif keep_best and selection.best_epoch == epoch and epoch < config.epochs:
            best_state = _cpu_copy(encoder.model)
        if on_epoch_end:
            on_epoch_end(stats)
        if selection.patience_exhausted(config.early_stopping_patience):
            stopped_early = True
            break
        exhausted = exhausted_reason(history) if stop_when_exhausted else None
        if exhausted and epoch < config.epochs:
            break
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < config.epochs:
            stopped = True
            break
    seconds = time.perf_counter() - started

    # 5. The best epoch's weights back in place, eval after, export.
    epochs = [EpochStats(**h) for h in history]
    eval_after: dict[str, float] = {}
    exported = None
    if not stopped:
        encoder.model.eval()
        exported = epochs[-1].epoch if epochs else None
        exported = _take_best(encoder, selection, exported, keep_best, checkpoint_dir, best_state)
        best_state = None
        figures = next((e.eval for e in epochs if e.epoch == exported), {})
        # A validation set was evaluated at the end of the exported epoch: same rows, same
        # weights, so no second pass. The training sample is evaluated here, once.
        eval_after = dict(figures) if figures else _evaluate(encoder, eval_rows, config)
    output = None
    if out_dir is not None and not stopped:
        output = str(_export(encoder, Path(out_dir), use_lora))
    return TrainResult(
        epoch_losses=[e.loss for e in epochs],
        epochs=epochs,
        eval_before=eval_before,
        eval_after=eval_after,
        output_dir=output,
        seconds=seconds,
        settings={
            **asdict(config),
            "model": encoder.spec.name,
            "lora": use_lora,
            "precision": encoder.precision,
            "device": encoder.device,
            "rows": len(rows),
            "eval_source": eval_source,
        },
        stopped=stopped,
        eval_source=eval_source,
        best_epoch=selection.best_epoch,
        selected_by=selection.metric if selection.best_epoch is not None else None,
        exported_epoch=exported,
        stopped_early=stopped_early,
        stop_reason=_stop_reason(
            stopped, stopped_early, exhausted, epochs, config.epochs, selection
        ),
    )


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


def _stop_reason(
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


def _take_best(
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
    if _restore(encoder.model, best, checkpoint_dir, best_state):
        return best
    log.warning(
        "best epoch %s (%s %.4f) has no checkpoint left: exporting the last epoch, %s",
        best,
        selection.metric,
        selection.best_value,
        last,
    )
    return last


def _export(encoder: Encoder, out_dir: Path, merged_lora: bool) -> Path:
    """Save in the sentence-transformers layout; LoRA adapters are merged into the base first."""
    model = encoder.model.merge_and_unload() if merged_lora else encoder.model
    spec = encoder.spec
    return export_sentence_transformers(
        out_dir,
        model,
        encoder.tokenizer,
        pooling=spec.pooling,
        dim=encoder.dim,
        max_tokens=spec.max_tokens,
        prompts=dict(spec.prompts),
        default_prompt=spec.default_task,
        # Everything a served model needs beyond the ST files: its precision policy and
        # Matryoshka dims (embedding.models.specs.spec_from_folder reads them back).
        extra={
            "name": out_dir.name,
            "base_model": spec.name,
            # The base's precision policy travels with it (embedding/inference/precision.py).
            "default_precision": spec.default_precision,
            "bf16_allowed": spec.bf16_allowed,
            # A fine-tune keeps the base's Matryoshka dims: truncating to them stays valid
            # (and `matryoshka` training optimized exactly those widths).
            "matryoshka_dims": list(spec.matryoshka_dims),
        },
    )


__all__ = [
    "CheckpointMismatch",
    "EpochStats",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "batch_backward",
    "batch_loss",
    "embeddings_loss",
    "epoch_batches",
    "eval_sample",
    "finetune",
    "load_for_training",
    "make_optimizer",
    "make_scheduler",
]

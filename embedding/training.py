"""Fine-tuning: one readable loop, top to bottom.

    examples -> validate -> load a *fresh* copy of the model -> (LoRA for large specs)
    -> for each epoch: shuffle (seeded) -> batches -> embed anchors/positives/negatives in
       ONE forward -> loss -> backward -> clip -> AdamW step -> LR schedule
    -> end of epoch: mean loss, eval, checkpoint (atomic), on_epoch_end callback
    -> export in the sentence-transformers layout

The trainer always loads its own copy of the weights, so a model being served is never
touched. Interrupted after epoch k and resumed, a run gives the same per-epoch losses as an
uninterrupted one (data order comes from ``seed + epoch``; dropout RNG, optimizer and
scheduler come back from the checkpoint).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedding.checkpoints import (
    export_sentence_transformers,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from embedding.data import SEED_TRIPLETS, DataError, Example, validate_examples
from embedding.encoder import Encoder
from embedding.evaluation import evaluate
from embedding.losses import (
    DEFAULT_MNRL_SCALE,
    DEFAULT_TRIPLET_MARGIN,
    multiple_negatives_ranking_loss,
    triplet_loss,
)
from embedding.specs import ModelSpec


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


@dataclass
class TrainConfig:
    loss: str = "triplet"  # triplet | mnrl
    epochs: int = 3
    lr: float = 2e-5
    batch_size: int = 16
    margin: float = DEFAULT_TRIPLET_MARGIN
    scale: float = DEFAULT_MNRL_SCALE
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01
    seed: int = 0
    precision: str | None = None  # None: the spec's default (bf16 autocast where supported)
    gradient_checkpointing: bool = False
    lora: bool | None = None  # None: the spec decides (large models train adapters only)
    lora_r: int = 8
    max_tokens: int | None = None  # cap sequence length while training (speed)

    def check(self) -> None:
        problems = []
        if self.loss not in ("triplet", "mnrl"):
            problems.append(f"loss must be 'triplet' or 'mnrl', got {self.loss!r}")
        if not isinstance(self.epochs, int) or self.epochs <= 0:
            problems.append(f"epochs must be a positive integer, got {self.epochs!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr must be a finite number > 0, got {self.lr!r}")
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            problems.append(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.grad_accum < 1:
            problems.append(f"grad_accum must be >= 1, got {self.grad_accum!r}")
        if not (math.isfinite(self.margin) and self.margin > 0):
            problems.append(f"margin must be a finite number > 0, got {self.margin!r}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class EpochStats:
    epoch: int  # 1-based
    loss: float
    lr: float
    samples_per_s: float
    duration_s: float
    eval: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    epoch_losses: list[float]
    epochs: list[EpochStats]
    eval_before: dict[str, float]
    eval_after: dict[str, float]
    output_dir: str | None
    seconds: float  # training loop time (excludes loading the model)
    settings: dict[str, Any]
    stopped: bool = False  # should_stop() ended it early


def load_for_training(
    model: str | Path | ModelSpec | Encoder, precision: str | None = None
) -> Encoder:
    """A fresh fp32-weight copy from disk: training never touches a served model's weights."""
    spec = model.spec if isinstance(model, Encoder) else model
    return Encoder.load(spec, device="auto", precision=precision)


def _apply_lora(encoder: Encoder, rank: int) -> None:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
    encoder.model = get_peft_model(encoder.model, config)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """This epoch's shuffled batches; a function of (seed, epoch) only, so resume repeats it."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def batch_loss(encoder: Encoder, rows: Sequence[Example], config: TrainConfig) -> torch.Tensor:
    """Embed every text of the batch in one forward pass, then split and score."""
    width = len(rows[0])
    texts = [row[i] for i in range(width) for row in rows]
    features = encoder.tokenize(texts)
    if config.max_tokens and features["input_ids"].shape[1] > config.max_tokens:
        features = {k: v[:, : config.max_tokens] for k, v in features.items()}
    embeddings = encoder.embed(features)
    parts = embeddings.split(len(rows))
    if config.loss == "triplet":
        if width != 3:
            raise DataError("loss 'triplet' needs triplets (anchor, positive, negative)")
        return triplet_loss(parts[0], parts[1], parts[2], margin=config.margin)
    return multiple_negatives_ranking_loss(*parts, scale=config.scale)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # fused=True runs the whole update as one kernel: ~6x faster optimizer step on this CPU.
    try:
        return torch.optim.AdamW(groups, lr=config.lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=config.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> Any:
    warmup = max(1, int(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
) -> TrainResult:
    """Train, checkpoint every epoch, export. See the module docstring for the shape of it."""
    config = config or TrainConfig()
    config.check()
    rows = validate_examples(examples)  # bad data is refused before any model is loaded
    eval_rows = validate_examples(eval_examples, where="eval row") if eval_examples else rows
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None

    _seed_everything(config.seed)
    encoder = load_for_training(model, config.precision)
    use_lora = encoder.spec.lora_for_finetune if config.lora is None else config.lora
    if use_lora:
        _apply_lora(encoder, config.lora_r)
    if config.gradient_checkpointing:
        encoder.model.gradient_checkpointing_enable()

    steps_per_epoch = math.ceil(math.ceil(len(rows) / config.batch_size) / config.grad_accum)
    optimizer = make_optimizer(encoder.model, config)
    scheduler = make_scheduler(optimizer, steps_per_epoch * config.epochs, config.warmup_ratio)

    history: list[dict[str, Any]] = []
    start_epoch = 1
    found = latest_checkpoint(checkpoint_dir) if resume else None
    if found is not None:
        trainer = load_checkpoint(found, encoder.model, optimizer, scheduler)
        history, start_epoch = trainer["history"], trainer["epoch"] + 1
        eval_before = trainer.get("eval_before", {})
        for done in (
            history
        ):  # replay: callers upsert, so a crash between checkpoint and record loses nothing
            if on_epoch_end:
                on_epoch_end(EpochStats(**done))
    else:
        encoder.model.eval()
        eval_before = evaluate(encoder, eval_rows)

    stopped = False
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs + 1):
        encoder.model.train()
        epoch_start, losses, seen = time.perf_counter(), [], 0
        batches = _batches(len(rows), config.batch_size, config.seed, epoch)
        for step, batch in enumerate(batches, start=1):
            if should_stop is not None and should_stop():
                stopped = True
                break
            with torch.enable_grad():
                loss = batch_loss(encoder, [rows[i] for i in batch], config)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"loss is {value} at epoch {epoch}, step {step}: training stopped"
                )
            (loss / config.grad_accum).backward()
            if step % config.grad_accum == 0 or step == len(batches):
                torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(value)
            seen += len(batch)
            if on_step:
                on_step(len(batch), value)
        if stopped:
            break
        encoder.model.eval()
        duration = time.perf_counter() - epoch_start
        stats = EpochStats(
            epoch=epoch,
            loss=statistics.fmean(losses),
            lr=float(scheduler.get_last_lr()[0]),
            samples_per_s=seen / duration if duration > 0 else 0.0,
            duration_s=duration,
            eval=evaluate(encoder, eval_rows) if eval_examples else {},
        )
        history.append(asdict(stats))
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, epoch, encoder.model, optimizer, scheduler, history)
            _remember_eval_before(checkpoint_dir, eval_before)
        if on_epoch_end:
            on_epoch_end(stats)
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < config.epochs:
            stopped = True
            break
    seconds = time.perf_counter() - started

    encoder.model.eval()
    eval_after = evaluate(encoder, eval_rows) if not stopped else {}
    output = None
    if out_dir is not None and not stopped:
        output = str(_export(encoder, Path(out_dir), use_lora))
    epochs = [EpochStats(**h) for h in history]
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
        },
        stopped=stopped,
    )


def _remember_eval_before(checkpoint_dir: Path, eval_before: dict[str, float]) -> None:
    import json

    latest = latest_checkpoint(checkpoint_dir)
    if latest is not None:
        trainer = json.loads((latest / "trainer.json").read_text())
        trainer["eval_before"] = eval_before
        (latest / "trainer.json").write_text(json.dumps(trainer))


def _export(encoder: Encoder, out_dir: Path, merged_lora: bool) -> Path:
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
        extra={
            "name": out_dir.name,
            "base_model": spec.name,
            "default_precision": spec.default_precision,
        },
    )


# ------------------------------------------------------------- seed checks
@dataclass
class ConvergenceRun:
    epoch_losses: list[float]
    seconds: float
    settings: dict[str, Any]


# The seed's convergence check: 5 triplets, 3 epochs, lr 1e-4. Chosen so it measures learning:
# * margin 1.0 (cosine distance): minilm already ranks all five triplets right, so with the
#   default 0.5 the loss is ~0.09 at first and exactly 0 after one step (measured) - a check
#   that cannot tell learning from nothing. At 1.0 the loss starts at ~0.53 and stays > 0.
# * one batch of all five triplets, no warmup: one optimizer step per epoch, so epoch k's loss
#   is the model after k-1 updates. Measured on minilm, seeds 0/1/2: [0.53, 0.29, 0.13],
#   74-76 % improvement, about 0.5 s of training.
CONVERGENCE_CONFIG = dict(batch_size=5, warmup_ratio=0.0, margin=1.0)
# Timing uses the same margin so the triplet loss is non-zero and gradients really flow.
TIMING_MARGIN = 1.0


def run_convergence(
    model: str | ModelSpec | Encoder, epochs: int = 3, lr: float = 1e-4
) -> ConvergenceRun:
    config = TrainConfig(loss="triplet", epochs=epochs, lr=lr, **CONVERGENCE_CONFIG)
    result = finetune(model, SEED_TRIPLETS, config)
    return ConvergenceRun(result.epoch_losses, result.seconds, result.settings)


def time_train_step(
    model: str | ModelSpec | Encoder, triplets: Sequence[Example] = SEED_TRIPLETS, repeats: int = 10
) -> dict[str, Any]:
    """Median ms of forward+backward of the triplet loss on the batch, and of the optimizer step.

    The whole computation is timed: tokenizing, one forward over all 15 texts, loss, backward
    through every trainable parameter; the optimizer step is timed beside it.
    """
    encoder = load_for_training(model)
    encoder.model.train()
    config = TrainConfig(loss="triplet", lr=1e-5, margin=TIMING_MARGIN)
    optimizer = make_optimizer(encoder.model, config)
    rows = validate_examples(triplets)
    forward_backward, optimizer_ms, grad_norm = [], [], 0.0
    for i in range(repeats + 2):
        optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = batch_loss(encoder, rows, config)
        loss.backward()
        t1 = time.perf_counter()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), float("inf")))
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if i >= 2:  # two warm-up steps
            forward_backward.append((t1 - t0) * 1000)
            optimizer_ms.append((t3 - t2) * 1000)
    return {
        "forward_backward_ms": statistics.median(forward_backward),
        "optimizer_ms": statistics.median(optimizer_ms),
        "grad_norm": grad_norm,
        "batch": len(rows),
        "precision": encoder.precision,
        "fused_adamw": bool(optimizer.defaults.get("fused")),
        "repeats": repeats,
    }

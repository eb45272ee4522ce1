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
       exactly zero (the data is exhausted:
       :func:`~embedding.training.epoch_hooks.exhausted_reason`); ``stop_reason`` says which
    -> the best epoch's weights back in place -> eval after -> export in the
       sentence-transformers layout (LoRA merged into the base)

Only the loop lives here; each part it calls is named beside it: the settings and the
result (``config``), loading and the optimizer (``setup``), one step (``steps``), the eval
set, best epoch and stop reasons (``epoch_hooks``), checkpoints and the run's fingerprint
(``checkpoints``), the export (``export``).

The eval set: the validation rows (``eval_examples``) when given; otherwise a seeded sample
of at most ``eval_sample_rows`` training rows, so "before and after" never re-encodes a
large training set. Results say which (``eval_source``: ``"validation"`` or
``"train-sample:N of M"``). Only a validation set is evaluated after every epoch.

Best epoch: with a validation set, the epoch with the best MRR@10 (pairs) or triplet
accuracy (triplets) is the one exported (:mod:`embedding.training.epoch_selection`;
``select_best_epoch`` off exports the last). Its weights come back from its own checkpoint, which pruning spares:
no second copy of the model in memory, and the checkpoint has to be on disk anyway for the
best to survive a resume. Only a run without a checkpoint directory (no resume possible)
keeps a CPU copy of the best epoch's trainable weights instead.

Which model is trained: the trainer always loads its own copy of the weights from disk
(:func:`~embedding.training.setup.load_for_training`), also when handed an
:class:`Encoder`; a model being served is never touched, and in-memory changes to a passed
encoder are not picked up.

Exact resume: data order is a function of ``(seed, epoch)`` only; dropout RNG, optimizer and
scheduler come back from the checkpoint. A run interrupted after epoch k and resumed gives
the same per-epoch losses as an uninterrupted one (to 1e-6 in fp32 on CPU; tested). A
checkpoint directory remembers a fingerprint of the run (settings, model, data), so a resume
with other settings or data is refused instead of silently mixing two runs.

Data parallel: given a ``group`` (:mod:`embedding.training.rank_group`; started by
:func:`embedding.training.distributed.finetune_distributed`) this same loop runs in every
rank. Each embeds its shard of every global batch, the loss is the global batch's (in-batch
negatives gathered with gradients), gradients are averaged before each step; only rank 0
(the writer) evaluates, writes checkpoints and ``run.json``, calls the callbacks and
exports. The data order is the global batches', so a resume may use another world size.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from embedding.data.examples import validate_examples
from embedding.inference.encoder import Encoder
from embedding.models.specs import ModelSpec
from embedding.training.checkpoints import (
    check_same_run,
    clear_checkpoints,
    epoch_folder,
    latest_checkpoint,
    load_checkpoint,
    model_name,
    read_run,
    run_fingerprint,
    save_checkpoint,
    write_run,
)
from embedding.training.config import EpochStats, TrainConfig, TrainResult
from embedding.training.epoch_hooks import (
    cpu_copy,
    eval_set,
    evaluate_rows,
    exhausted_reason,
    stop_reason,
    take_best,
)
from embedding.training.epoch_selection import select
from embedding.training.export import export_model
from embedding.training.guide import prepare, similar_batches
from embedding.training.rank_group import RankGroup
from embedding.training.setup import (
    apply_lora,
    check_loss_fits,
    check_matryoshka,
    disable_dropout,
    enable_checkpointing,
    load_for_training,
    make_optimizer,
    make_scheduler,
    seed_everything,
)
from embedding.training.steps import (
    batch_backward,
    check_finite_loss,
    epoch_batches,
    optimizer_step,
)


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
    group: RankGroup | None = None,
    on_prepared: Callable[[str], None] | None = None,
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

    ``group``: this process is one rank of a data-parallel group (module docstring); on the
    ranks but the writer, the callbacks are never called and the result has no export.

    ``on_prepared(note)``: a sentence for each thing the recipe's preparation did before
    the first step (hard negatives mined, the guided filter;
    :mod:`embedding.training.guide`); a job records them as events.
    """
    # 1. Refuse bad settings and data before anything is loaded.
    config = config or TrainConfig()
    config.check()
    rows = validate_examples(examples)
    check_loss_fits(rows, config)
    check_matryoshka(model, config)
    validation = validate_examples(eval_examples, where="eval row") if eval_examples else None
    eval_rows, eval_source = eval_set(rows, validation, config)
    keep_best = validation is not None and config.select_best_epoch
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
    writer = group is None or group.writer
    if not writer:  # only the writer reports
        on_epoch_end = on_step = on_checkpoint = on_prepared = None
    fingerprint = run_fingerprint(model_name(model), config, rows, validation)
    found = latest_checkpoint(checkpoint_dir) if resume else None
    if found is not None:
        check_same_run(checkpoint_dir, fingerprint)  # type: ignore[arg-type]
    if group is not None:
        group.barrier()  # every rank has read what it resumes from before the writer clears
    if found is None and checkpoint_dir is not None and writer:
        clear_checkpoints(checkpoint_dir)
    # Where checkpoints are written: the writer's folder; the other ranks write nothing.
    save_dir = checkpoint_dir if writer else None

    # 2. Our own copy of the model; LoRA for large specs; optimizer and schedule.
    seed_everything(config.seed)
    encoder = load_for_training(model, config.precision, group.device if group else None)
    # Again: loading draws from the global RNG as much as the process's history makes it (a
    # first load in a fresh process draws otherwise than a later one, and a data-parallel
    # rank is a fresh process), so LoRA's initial adapters and the dropout masks come from
    # the seed alone only when seeded after the load.
    seed_everything(config.seed)
    if not config.dropout:
        disable_dropout(encoder.model)
    # 2b. The recipe's preparation with the starting model: mined hard negatives (the rows
    # grow a column), the guide's vectors for the in-batch filter. Before any checkpoint is
    # loaded, so a resumed run prepares from the same starting weights.
    prepared = prepare(encoder, rows, config)
    if group is not None and config.hard_negatives:
        prepared.rows = [tuple(r) for r in group.from_writer(prepared.rows)]  # one data set
    rows, guide = prepared.rows, prepared.guide
    for note in prepared.notes:
        if on_prepared:
            on_prepared(note)
    use_lora = encoder.spec.lora_for_finetune if config.lora is None else config.lora
    if config.gradient_checkpointing:
        enable_checkpointing(encoder.model)
    if use_lora:
        apply_lora(encoder, config.lora_r)
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
        eval_before = evaluate_rows(encoder, eval_rows, config) if writer else {}
        if save_dir is not None:
            write_run(save_dir, {"fingerprint": fingerprint, "eval_before": eval_before})
    if group is not None:
        group.broadcast_parameters(encoder.model)
        if group.rank > 0:  # its own dropout masks, not rank 0's again
            torch.manual_seed(config.seed * 1009 + group.rank * 7919 + start_epoch)

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
        if save_dir is None:
            return
        part = {"step": step, "losses": losses, "seen": seen, "lr": lr, "duration_s": spent}
        path = save_checkpoint(
            save_dir,
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
        if config.hard_batches and guide is not None:
            code = guide.of([row[1] for row in rows])
            batches = similar_batches(
                code, config.batch_size, config.seed, epoch, config.hard_batch_share
            )
            if group is not None:
                batches = group.from_writer(batches)  # one order on every rank
        else:
            batches = epoch_batches(len(rows), config.batch_size, config.seed, epoch)
        saved_at_step = done_before

        for step, batch in enumerate(batches, start=1):
            if step <= done_before:
                continue
            stop = should_stop is not None and should_stop()
            if group is not None:
                stop = group.any(stop)  # asked in the writer, every rank stops at this step
            if stop:
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
                value = batch_backward(
                    encoder, [rows[i] for i in batch], config, 1 / group_size, group, guide
                )
            check_finite_loss(value, epoch, step, config)
            if step - group_start == group_size:
                lr_used = optimizer_step(encoder, optimizer, scheduler, config, epoch, step, group)
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
        figures = evaluate_rows(encoder, eval_rows, config) if validation and writer else {}
        if group is not None and validation is not None:
            figures = group.from_writer(figures)  # every rank selects and stops alike
        stats = EpochStats(
            epoch=epoch,
            loss=statistics.fmean(losses),
            lr=lr_used,
            samples_per_s=seen / duration if duration > 0 else 0.0,
            duration_s=duration,
            eval=figures,
        )
        history.append(asdict(stats))
        selection = select(history)
        if save_dir is not None:
            path = save_checkpoint(
                save_dir,
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
        elif writer and keep_best and selection.best_epoch == epoch and epoch < config.epochs:
            best_state = cpu_copy(encoder.model)
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
    if not stopped and writer:
        encoder.model.eval()
        exported = epochs[-1].epoch if epochs else None
        exported = take_best(encoder, selection, exported, keep_best, checkpoint_dir, best_state)
        best_state = None
        figures = next((e.eval for e in epochs if e.epoch == exported), {})
        # A validation set was evaluated at the end of the exported epoch: same rows, same
        # weights, so no second pass. The training sample is evaluated here, once.
        eval_after = dict(figures) if figures else evaluate_rows(encoder, eval_rows, config)
    output = None
    if out_dir is not None and not stopped and writer:
        output = str(export_model(encoder, Path(out_dir), use_lora))
    return TrainResult(
        epoch_losses=[e.loss for e in epochs],
        epochs=epochs,
        eval_before=eval_before,
        eval_after=eval_after,
        output_dir=output,
        seconds=seconds,
        prepare_seconds=prepared.seconds,
        preparation=prepared.notes,
        settings={
            **asdict(config),
            "model": encoder.spec.name,
            "lora": use_lora,
            "precision": encoder.precision,
            "device": encoder.device,
            "rows": len(rows),
            "eval_source": eval_source,
            "world_size": group.world_size if group else 1,
        },
        stopped=stopped,
        eval_source=eval_source,
        best_epoch=selection.best_epoch,
        selected_by=selection.metric if selection.best_epoch is not None else None,
        exported_epoch=exported,
        stopped_early=stopped_early,
        stop_reason=stop_reason(
            stopped, stopped_early, exhausted, epochs, config.epochs, selection
        ),
    )

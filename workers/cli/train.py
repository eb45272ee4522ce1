"""``embedctl finetune`` and ``embedctl eval`` (local, no queue)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from embedding.training.hyperparameters import (
    DEFAULT_EVAL_SAMPLE_ROWS,
    HYPERPARAMETERS,
    LEVERS,
    with_recipe,
)
from workers.cli.hyperparameter_options import add_hyperparameter_options, hyperparameters_from

# A local run may set every shared hyper-parameter.
FINETUNE_HYPERPARAMETERS = tuple(HYPERPARAMETERS)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model on triplets or pairs (JSONL), locally")
    add_finetune_options(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser(
        "eval", help="evaluate a model on triplets (accuracy) or pairs (MRR@10, recall@1)"
    )
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.set_defaults(func=cmd_eval)


def levers_on(config: Any) -> list[str]:
    """The recipe's levers a run trains with, as the summary line names them."""
    switches = [name for name in LEVERS if name != "hard_negatives"]  # the on/off ones
    found = [name.replace("_", " ") for name in switches if getattr(config, name)]
    k = config.hard_negatives
    return found + ([f"{k} hard negative(s) mined per pair"] if k else [])


def add_finetune_options(p: argparse.ArgumentParser) -> None:
    """Every ``finetune`` option, in one place, apart from the wiring."""
    p.add_argument("--model", required=True, help="spec name or model folder")
    p.add_argument("--data", required=True, help="JSONL of {anchor, positive[, negative]}")
    p.add_argument(
        "--eval-data",
        default=None,
        help="JSONL validation set: evaluated before, after every epoch (picks the best "
        "epoch, drives early stopping) and after (default: a seeded sample of at most "
        f"{DEFAULT_EVAL_SAMPLE_ROWS} --data rows, before and after only)",
    )
    add_hyperparameter_options(p, FINETUNE_HYPERPARAMETERS)
    p.add_argument("--out", required=True, help="output folder (sentence-transformers layout)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in --out"
    )
    p.add_argument(
        "--json", dest="json_path", default=None, help="write per-epoch figures and eval as JSON"
    )
    p.add_argument(
        "--devices",
        type=int,
        default=1,
        help="train data-parallel on this many devices, one process each (CUDA GPUs 0..N-1 "
        "over NCCL, or N CPU processes over gloo): the batch size is the global batch",
    )
    p.add_argument(
        "--no-dropout",
        dest="dropout",
        action="store_false",
        help="train without dropout (deterministic: for comparing runs)",
    )


def cmd_finetune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from embedding.data.examples import load_examples, row_kind
    from embedding.training.config import TrainConfig
    from embedding.training.distributed import finetune_distributed, local_devices

    rows = load_examples(args.data)  # validated before any model is loaded
    eval_rows = load_examples(args.eval_data) if args.eval_data else None
    # What was not given comes from the recipe for these rows (pairs: the code-search recipe).
    config = TrainConfig(
        **with_recipe(hyperparameters_from(args, FINETUNE_HYPERPARAMETERS), len(rows[0])),
        dropout=args.dropout,
    )
    config.check()
    devices = local_devices(args.devices)
    print(
        f"{len(rows)} {row_kind(len(rows[0]))}s: loss {config.loss}, {config.epochs} epoch(s), "
        f"lr {config.lr:g}, batch {config.batch_size}"
        + "".join(f", {lever}" for lever in levers_on(config))
        + (f" over {len(devices)} devices ({', '.join(devices)})" if len(devices) > 1 else ""),
        file=sys.stderr,
    )
    out = Path(args.out)
    bar = tqdm(total=len(rows) * config.epochs, unit="ex", desc="fine-tune", file=sys.stderr)

    def on_step(n: int, loss: float) -> None:
        bar.update(n)
        bar.set_postfix(loss=f"{loss:.4f}")

    def on_epoch_end(stats) -> None:
        bar.write(f"epoch {stats.epoch}: loss {stats.loss:.6f}, {stats.samples_per_s:.1f} ex/s")

    result = finetune_distributed(
        args.model,
        rows,
        config,
        devices=devices,
        out_dir=out / "model",
        checkpoint_dir=out / "checkpoints",
        resume=args.resume,
        eval_examples=eval_rows,
        on_step=on_step,
        on_epoch_end=on_epoch_end,
        stop_when_exhausted=True,  # loss 0: nothing left to learn; say so and stop
        on_prepared=bar.write,  # what the recipe's preparation did (mining, hard batches)
    )
    bar.close()
    print(f"\n{'epoch':>5}  {'loss':>10}  {'lr':>10}  {'ex/s':>8}  {'seconds':>8}")
    for e in result.epochs:
        print(
            f"{e.epoch:>5}  {e.loss:>10.6f}  {e.lr:>10.2e}  {e.samples_per_s:>8.1f}  {e.duration_s:>8.2f}"
        )
    print(f"\neval on {result.eval_source}\n          before     after")
    for key in result.eval_before:
        print(
            f"{key:<9} {result.eval_before[key]:>7.4f}  {result.eval_after.get(key, float('nan')):>7.4f}"
        )
    if result.best_epoch is not None:
        print(
            f"\nbest epoch {result.best_epoch} by {result.selected_by}; "
            f"exported epoch {result.exported_epoch}"
            + ("; stopped early" if result.stopped_early else "")
        )
    if result.stop_reason:
        print(f"\n{result.stop_reason}")
    curve = _plot_losses(result, out / "model" / "loss_curve.png")
    print(f"\nmodel: {result.output_dir}\nloss curve: {curve}")
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps(
                {
                    "model": result.output_dir,
                    "epochs": [vars(e) for e in result.epochs],
                    "epoch_losses": result.epoch_losses,
                    "world_size": result.settings.get("world_size", 1),
                    "eval_before": result.eval_before,
                    "eval_after": result.eval_after,
                    "eval_source": result.eval_source,
                    "best_epoch": result.best_epoch,
                    "selected_by": result.selected_by,
                    "exported_epoch": result.exported_epoch,
                    "stopped_early": result.stopped_early,
                    "stop_reason": result.stop_reason,
                    "train_seconds": result.seconds,
                    "settings": result.settings,
                },
                indent=2,
            )
        )
    return 0


def _plot_losses(result, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([e.epoch for e in result.epochs], result.epoch_losses, marker="o")
    ax.set(title=f"{result.settings['model']} fine-tune", xlabel="epoch", ylabel="mean train loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cmd_eval(args: argparse.Namespace) -> int:
    from embedding.data.examples import load_examples
    from embedding.evaluation.metrics import evaluate
    from embedding.inference.encoder import load_encoder
    from workers.serving.model_names import local_model_name

    rows = load_examples(args.data)
    metrics = evaluate(load_encoder(local_model_name(args.model)), rows)
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}")
    return 0

"""``embedctl jobs submit|list|show|watch|cancel|relay``.

``jobs watch`` follows a job through the database (the epochs land there as they finish),
so it works the same with any broker, or none.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from workers.cli.hyperparameter_options import add_hyperparameter_options, hyperparameters_from

# The payload's hyper-parameters (FinetuneRequest); tests/test_hyperparameters.py checks it.
SUBMIT_HYPERPARAMETERS = (
    "loss",
    "epochs",
    "lr",
    "batch_size",
    "margin",
    "seed",
    "mini_batch_size",
    "matryoshka",
    "early_stopping_patience",
    "select_best_epoch",
)


def add_commands(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="fine-tune jobs: submit, list, show, watch, cancel, relay")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)

    p = jsub.add_parser(
        "submit", help="submit a fine-tune job from a JSONL file of triplets or pairs"
    )
    add_submit_options(p)
    p.set_defaults(func=cmd_submit)

    p = jsub.add_parser("list", help="recent jobs")
    p.add_argument("--status", default=None)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_list)

    for name, func, text in (
        ("show", cmd_show, "a job with its epochs and its timeline (events), as JSON"),
        ("watch", cmd_watch, "follow a job: progress bar with the loss"),
        ("cancel", cmd_cancel, "cancel a job (a running job stops at its next batch)"),
    ):
        p = jsub.add_parser(name, help=text)
        p.add_argument("job_id")
        if name == "watch":
            p.add_argument("--timeout", type=float, default=None)
        p.set_defaults(func=func)

    p = jsub.add_parser("relay", help="send jobs still in the outbox (broker was down)")
    p.set_defaults(func=cmd_relay)


def add_submit_options(p: argparse.ArgumentParser) -> None:
    """Every ``jobs submit`` option, in one place, apart from the wiring."""
    p.add_argument("--model", required=True)
    p.add_argument(
        "--data", required=True, help="JSONL: {anchor, positive, negative} or {anchor, positive}"
    )
    p.add_argument(
        "--validation-data",
        default=None,
        help="JSONL validation set: picks the best epoch, drives early stopping "
        "(default: none; a sample of --data is evaluated before and after)",
    )
    add_hyperparameter_options(p, SUBMIT_HYPERPARAMETERS)
    p.add_argument("--idempotency-key", default=None)
    p.add_argument(
        "--suffix", default=None, help="name the model version <model>-<suffix> (default: -ft)"
    )
    p.add_argument("--watch", action="store_true", help="then follow it with a progress bar")


def _read_rows(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.args[0]})") from None
    return rows


def cmd_submit(args: argparse.Namespace) -> int:
    from workers.client import submit_finetune

    rows = _read_rows(args.data)
    kind = "triplets" if rows and isinstance(rows[0], dict) and "negative" in rows[0] else "pairs"
    validation = _read_rows(args.validation_data) if args.validation_data else None
    job_id = submit_finetune(
        args.model,
        **{kind: rows},
        validation=validation,
        idempotency_key=args.idempotency_key,
        **hyperparameters_from(args, SUBMIT_HYPERPARAMETERS),
        **({"suffix": args.suffix} if args.suffix else {}),
    )
    print(job_id)
    if args.watch:
        return watch(job_id)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from workers.client import list_jobs

    for job in list_jobs(status=args.status, limit=args.limit):
        last = job["epochs"][-1]["train_loss"] if job["epochs"] else None
        loss = f"{last:.4f}" if last is not None else "-"
        print(
            f"{job['id']}  {job['status']:<9}  {job['model']:<12}  epochs {len(job['epochs'])}  loss {loss}  {job['created_at']}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from workers.client import job_status

    print(json.dumps(job_status(args.job_id), indent=2))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from workers.client import cancel_job

    job = cancel_job(args.job_id)
    print(f"{job['id']}: {job['status']} (cancel requested)")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    return watch(args.job_id, timeout=args.timeout)


def watch(job_id: str, timeout: float | None = None, interval: float = 0.5) -> int:
    """Progress bar over epochs with the latest loss; exit 0 if the job succeeds."""
    from tqdm import tqdm

    from workers.client import job_status

    job = job_status(job_id)
    total = int(job["params"].get("epochs", 0)) or None
    bar = tqdm(total=total, desc=f"job {job_id[:8]}", unit="epoch", file=sys.stderr)
    seen = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            job = job_status(job_id)
            epochs = job["epochs"]
            if len(epochs) > seen:
                bar.update(len(epochs) - seen)
                seen = len(epochs)
                bar.set_postfix(loss=f"{epochs[-1]['train_loss']:.4f}", status=job["status"])
            else:
                bar.set_postfix(
                    loss=f"{epochs[-1]['train_loss']:.4f}" if epochs else "-", status=job["status"]
                )
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            if deadline is not None and time.monotonic() > deadline:
                print(f"\njob {job_id} still {job['status']} after {timeout:g} s", file=sys.stderr)
                return 1
            time.sleep(interval)
    finally:
        bar.close()
    print(f"job {job_id}: {job['status']}" + (f" ({job['error']})" if job["error"] else ""))
    return 0 if job["status"] == "succeeded" else 1


def cmd_relay(args: argparse.Namespace) -> int:
    from workers.jobs.outbox import relay_unsent

    print(f"sent {relay_unsent()} job(s) from the outbox")
    return 0

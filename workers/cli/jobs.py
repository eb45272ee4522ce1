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
    "symmetric_loss",
    "hard_negatives",
    "guided_filter",
    "hard_batches",
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
    p.add_argument("--project", default=None, help="only this project's jobs (name or id)")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_list)

    for name, func, text in (
        ("show", cmd_show, "a job: its model, epochs, result and timeline (events)"),
        ("watch", cmd_watch, "follow a job: progress bar with the loss"),
        ("cancel", cmd_cancel, "cancel a job (a running job stops at its next batch)"),
    ):
        p = jsub.add_parser(name, help=text)
        p.add_argument("job_id")
        if name == "watch":
            p.add_argument("--timeout", type=float, default=None)
        if name == "show":
            p.add_argument(
                "--json",
                action="store_true",
                help="print the job as JSON (every field, as embedding.job_status returns it)",
            )
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
    p.add_argument(
        "--project", default=None, help="the project the job belongs to (default: default)"
    )
    p.add_argument(
        "--devices",
        type=_devices,
        default=None,
        help="train on N devices of the worker's host as one data-parallel group, or 'all' "
        "(default: 1); the job waits for N free gpu slots",
    )


def _devices(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of devices or 'all', not {text!r}") from None


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
        **({"project": args.project} if args.project else {}),
        **({"n_devices": args.devices} if args.devices is not None else {}),
    )
    print(job_id)
    if args.watch:
        return watch(job_id)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from db import repo
    from db.session import session_scope
    from workers.client import list_jobs

    scope = repo.ALL_PROJECTS
    if args.project:
        with session_scope() as session:
            scope = repo.scope.project(repo.projects.require_project(session, args.project).id)
    for job in list_jobs(status=args.status, limit=args.limit, scope=scope):
        last = job["epochs"][-1]["train_loss"] if job["epochs"] else None
        loss = f"{last:.4f}" if last is not None else "-"
        print(
            f"{job['id']}  {job['status']:<9}  {job['model']:<12}  epochs {len(job['epochs'])}  loss {loss}  {job['created_at']}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from workers.client import job_status

    job = job_status(args.job_id)
    print(json.dumps(job, indent=2) if args.json else job_summary(job))
    return 0


def job_summary(job: dict) -> str:
    """A job (``embedding.job_status``'s dict) for a person: what it trains, how far it got,
    what it concluded, and its timeline; ``jobs show --json`` prints the dict itself."""
    lines = [f"job {job['id']}: {job['status']}"]
    model = job["model"]
    if job.get("model_version"):
        model += f" -> {job['model_version']} (embed with {job['fine_tuned_model']})"
    lines.append(f"  model     {model}")
    params = [f"{k} {_value(v)}" for k, v in job.get("params", {}).items() if v is not None]
    if params:
        lines.append(f"  params    {', '.join(params)}")
    times = [
        f"{label} {_when(job.get(key))}"
        for label, key in (("created", "created_at"), ("started", "started_at"))
        if job.get(key)
    ]
    if job.get("finished_at"):
        times.append(f"finished {_when(job['finished_at'])}")
    lines.append(f"  times     {', '.join(times)}")
    worker = f", last worker {job['worker']}" if job.get("worker") else ""
    lines.append(f"  attempts  {job.get('attempts', 0)}{worker}")
    if job.get("error"):
        lines.append(f"  error     {job['error']}")

    epochs = job.get("epochs", [])
    lines.append("")
    if epochs:
        lines.append(f"  {'epoch':>5}  {'train loss':>10}  {'s':>7}  {'rows/s':>7}  validation")
        for e in epochs:
            lines.append(
                f"  {e['epoch']:>5}  {e['train_loss']:>10.4f}  {_number(e.get('duration_s'), 7, 1)}"
                f"  {_number(e.get('samples_per_s'), 7, 1)}  {_metrics(e.get('eval'))}".rstrip()
            )
    else:
        lines.append("  no epoch finished yet")

    result = job.get("result")
    if result:
        lines.append("")
        lines.extend(f"  {line}" for line in _result_lines(result))

    events = job.get("events", [])
    if events:
        lines.append("")
        lines.append("  timeline")
        for event in events:
            worker = event.get("worker")
            extra = f"  [{worker}]" if worker and worker not in event["message"] else ""
            lines.append(f"    {_when(event['at'])}  {event['message']}{extra}")
    return "\n".join(lines)


def _result_lines(result: dict) -> list[str]:
    lines = []
    best, exported = result.get("best_epoch"), result.get("exported_epoch")
    trained = result.get("epochs_trained")
    if best is not None:
        text = f"best epoch {best}"
        if trained:
            text += f" of {trained}"
        if result.get("selected_by"):
            text += f" by validation {result['selected_by']}"
            if result.get("best_value") is not None:
                text += f" {result['best_value']:.4f}"
        lines.append(text)
    if exported is not None:
        lines.append(f"the model version holds epoch {exported}'s weights")
    if result.get("stopped_early"):
        lines.append("stopped early (no validation gain)")
    elif result.get("stop_reason"):
        lines.append(f"stopped: {result['stop_reason']}")
    before, after = result.get("eval_before") or {}, result.get("eval_after") or {}
    shared = [k for k in after if k in before and _is_number(before[k]) and _is_number(after[k])]
    if shared:
        source = f" ({result['eval_source']})" if result.get("eval_source") else ""
        changes = ", ".join(f"{k} {before[k]:.4f} -> {after[k]:.4f}" for k in shared)
        lines.append(f"before -> after{source}: {changes}")
    return lines


def _when(iso: str | None) -> str:
    """``2026-12-06T10:00:01.123456+00:00`` -> ``2026-12-06 10:00:01``."""
    return iso[:19].replace("T", " ") if iso else "-"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if _is_number(value) else f"{'-':>{width}}"


def _metrics(figures: dict | None) -> str:
    if not figures:
        return ""
    return ", ".join(
        f"{k} {v:.4f}" if _is_number(v) else f"{k} {_value(v)}" for k, v in figures.items()
    )


def _value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


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

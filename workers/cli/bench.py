"""``embedctl bench`` and ``embedctl bench history``: benchmark figures over time."""

from __future__ import annotations

import argparse

from workers.cli.db import ensure_schema


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark a model and record it; `bench history` shows the trend"
    )
    p.add_argument("action", nargs="?", choices=("run", "history"), default="run")
    p.add_argument("--model", default=None)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from core.config import get_settings

    ensure_schema()
    if args.action == "history":
        return _history(args.model, args.limit)
    from workers.reports.benchmark_record import run_and_record_benchmark

    model = args.model or get_settings().default_model
    figures = run_and_record_benchmark(model, args.iterations, args.batch_size)
    lat = figures["latency"]
    print(
        f"{model} on {figures['device']} ({figures['precision']}): latency mean {lat['mean_ms']:.2f} ms, "
        f"p50 {lat['p50_ms']:.2f}, p95 {lat['p95_ms']:.2f}, p99 {lat['p99_ms']:.2f} ms; "
        f"throughput {figures['throughput_per_s']:.1f} texts/s; peak memory {figures['peak_memory_mb']:.0f} MB"
    )
    return _history(model, 2)


def _history(model: str | None, limit: int) -> int:
    from db import repo
    from db.session import session_scope

    with session_scope() as session:
        rows = list(reversed(repo.benchmarks.benchmark_history(session, model=model, limit=limit)))
        if not rows:
            print("no benchmark results yet: run `embedctl bench --model NAME`")
            return 0
        print(
            f"{'when (UTC)':<20} {'model':<10} {'prec':<5} {'p50 ms':>8} {'Δ':>7} {'p95 ms':>8} {'texts/s':>9} {'Δ':>7} {'grad ms':>8}"
        )
        previous: dict[str, object] = {}
        for row in rows:
            before = previous.get(row.model)
            d_p50 = _change(row.latency_p50_ms, before.latency_p50_ms if before else None)
            d_tp = _change(row.throughput_per_s, before.throughput_per_s if before else None)
            grad = f"{row.grad_step_ms:.1f}" if row.grad_step_ms is not None else "-"
            print(
                f"{row.created_at:%Y-%m-%d %H:%M:%S}  {row.model:<10} {row.precision:<5} {row.latency_p50_ms:>8.2f} {d_p50:>7} "
                f"{row.latency_p95_ms:>8.2f} {row.throughput_per_s:>9.1f} {d_tp:>7} {grad:>8}"
            )
            previous[row.model] = row
    return 0


def _change(now: float, before: float | None) -> str:
    if before is None or before == 0:
        return "-"
    return f"{(now - before) / before:+.1%}"

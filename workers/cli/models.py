"""``embedctl models``: every model spec, and whether it can be loaded here without a download."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model specs and whether each is available locally")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from embedding.models.hub import ModelUnavailable, resolve
    from embedding.models.specs import all_specs, get_spec
    from embedding.models.weights import WeightsError

    rows = []
    for spec in all_specs():
        if spec.source == "combined":
            members = [get_spec(m) for m in spec.members]
            available = all(_available(m, resolve) for m in members)
            where = "+".join(spec.members)
        else:
            try:
                available, where = True, str(resolve(spec).folder)
            except (ModelUnavailable, WeightsError):
                available, where = False, spec.repo_id or spec.path or spec.package or ""
        rows.append(
            (
                spec.name,
                spec.source,
                spec.architecture or "-",
                spec.pooling,
                str(spec.dim),
                str(spec.max_tokens),
                spec.default_precision,
                "yes" if available else "no",
                where,
            )
        )
    header = ("name", "source", "arch", "pooling", "dim", "tokens", "precision", "local", "where")
    _print_table(header, rows)
    return 0


def _available(spec, resolve: Callable) -> bool:
    try:
        resolve(spec)
        return True
    except Exception:
        return False


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())

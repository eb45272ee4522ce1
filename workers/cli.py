"""``embedctl``: the command line.

Every heavy import (torch, transformers, celery, sqlalchemy) happens inside a handler, so
``embedctl --help`` answers at once. An error prints one clear line on stderr and exits
non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EXIT_ERROR = 1
EXIT_USAGE = 2


def _load(name: str, precision: str | None = None):
    from embedding.config import get_settings
    from embedding.encoder import load_encoder

    return load_encoder(name, device=get_settings().device, precision=precision)


# ------------------------------------------------------------------ commands
def cmd_models(args: argparse.Namespace) -> int:
    from embedding.hub import ModelUnavailable, resolve
    from embedding.specs import all_specs, get_spec
    from embedding.weights import WeightsError

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


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    texts = args.text if args.text else list(_read_jsonl_strings(sys.stdin))
    encoder = _load(args.model, args.precision)
    vectors = encoder.encode(texts, task=args.task, truncate_dim=args.truncate_dim)
    if args.format == "npy":
        buffer = sys.stdout.buffer
        np.save(buffer, np.ascontiguousarray(vectors, dtype=np.float32))
        buffer.flush()
    elif args.format == "jsonl":
        for row in vectors:
            sys.stdout.write(json.dumps([float(x) for x in row]) + "\n")
    else:
        json.dump([[float(x) for x in row] for row in vectors], sys.stdout)
        sys.stdout.write("\n")
    return 0


def _read_jsonl_strings(stream) -> list[str]:
    texts = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"stdin line {number}: not JSON ({exc.args[0]})") from None
        if not isinstance(value, str):
            raise TypeError(
                f"stdin line {number}: expected a JSON string, got {type(value).__name__}"
            )
        texts.append(value)
    return texts


def cmd_similarity(args: argparse.Namespace) -> int:
    from embedding.encoder import similarity

    encoder = _load(args.model, args.precision)
    a, b = encoder.encode([args.a, args.b], task=args.task)
    print(f"{similarity(a, b):.6f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedding demo: load the default model, embed code snippets, show similarities."""
    import numpy as np

    from embedding.config import get_settings
    from embedding.encoder import similarity_matrix

    name = args.model or get_settings().default_model
    encoder = _load(name)
    report = encoder.load_report
    print(f"model {name}: {report.source} {report.path}")
    print(
        f"  loaded in {report.load_time_ms:.0f} ms, {report.size_mb:.1f} MB, "
        f"{report.tensor_count} tensors, {report.parameter_count:,} parameters, "
        f"device {report.device}, precision {report.precision}"
    )
    snippets = [
        "def hello_world(): return 42",
        "async fn fetch_data() {}",
        "class MyClass: pass",
        "SELECT * FROM users WHERE id = 1",
        "const API_URL = 'https://api.example.com'",
        "def calculate_sum(): return sum",
        "def compute_total(): return total",
    ]
    vectors, truncation = encoder.encode(snippets, return_report=True)
    norms = np.linalg.norm(vectors, axis=1)
    print(
        f"  {len(snippets)} snippets -> {vectors.shape[1]}-d, "
        f"norms {norms.min():.6f}..{norms.max():.6f}"
    )
    sims = similarity_matrix(vectors)
    print("\ncosine similarity")
    short = [s[:18] for s in snippets]
    print(" " * 20 + " ".join(f"{i:>6d}" for i in range(len(snippets))))
    for i, row in enumerate(sims):
        print(f"{i} {short[i]:<18}" + " ".join(f"{v:6.3f}" for v in row))
    cut = sum(t.truncated for t in truncation)
    print(f"\n{cut} of {len(snippets)} inputs truncated")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from db import migrate

    if args.db_command == "upgrade":
        migrate.upgrade(args.url, revision=args.revision)
        print(f"database at revision {migrate.current(args.url)}")
    else:
        print(migrate.current(args.url) or "(no revision: run `embedctl db upgrade`)")
    return 0


# -------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedctl",
        description="Load, embed, fine-tune, benchmark and validate embedding models.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list model specs and whether each is available locally")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("embed", help="embed TEXTs (or JSON strings, one per line, on stdin)")
    p.add_argument("text", nargs="*", help="texts; none: read JSON lines from stdin")
    _model_args(p)
    p.add_argument("--format", choices=("json", "jsonl", "npy"), default="json")
    p.add_argument("--truncate-dim", type=int, default=None, help="Matryoshka dimension")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("similarity", help="cosine similarity of two texts")
    p.add_argument("a")
    p.add_argument("b")
    _model_args(p)
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("demo", help="embedding demo on the default model")
    p.add_argument("--model", default=None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("db", help="database migrations")
    p.add_argument("db_command", choices=("upgrade", "current"))
    p.add_argument("--url", default=None, help="database URL (default: EMBEDDING_DATABASE_URL)")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=cmd_db)

    for module in _COMMAND_MODULES:
        _add_module_commands(sub, module)
    return parser


# Modules that contribute subcommands through ``add_commands(subparsers)``.
_COMMAND_MODULES = (
    "workers.cli_train",
    "workers.cli_worker",
    "workers.cli_jobs",
    "workers.cli_bench",
    "workers.cli_validate",
    "workers.dashboard",
    "workers.cli_serve",
)


def _add_module_commands(sub: argparse._SubParsersAction, module: str) -> None:
    import importlib
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return
    importlib.import_module(module).add_commands(sub)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="spec name or model folder (default: settings)")
    p.add_argument("--task", default=None, help="task prompt, e.g. retrieval.query")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None)


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "model", "") is None and args.command in ("embed", "similarity"):
        from embedding.config import get_settings

        args.model = get_settings().default_model
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("embedctl: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"embedctl: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())

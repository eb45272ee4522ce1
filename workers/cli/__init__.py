"""``embedctl``: the command line.

Each command group lives in its own module with ``add_commands(sub)``; they are imported
here by name, so a missing module fails loudly instead of leaving a command out. Every
heavy import (torch, transformers, celery, sqlalchemy, matplotlib) happens inside a
handler, so ``embedctl --help`` answers at once. An error prints one clear line on stderr
and exits non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from workers.cli import (
    bench,
    compare,
    data,
    db,
    embed,
    jobs,
    models,
    projects,
    report,
    serve,
    train,
    validate,
    worker,
)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
# What a shell reports for a process ended by SIGPIPE, as `yes | head -1` does.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

# In the order ``embedctl --help`` lists them.
COMMAND_MODULES = (
    models,
    embed,
    db,
    train,
    data,
    compare,
    worker,
    jobs,
    bench,
    validate,
    report,
    serve,
    projects,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedctl",
        description="Load, embed, fine-tune, benchmark and validate embedding models.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that stops early (``embedctl jobs list | head -1``) is no error."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, so a closed pipe surfaces where we catch it
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("embedctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:
        if args.debug:
            raise
        print(f"embedctl: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"

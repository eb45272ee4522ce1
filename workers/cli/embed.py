"""``embedctl embed``, ``embedctl similarity`` and ``embedctl demo``: a model, locally, on texts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable


def add_commands(sub: argparse._SubParsersAction) -> None:
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


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="spec, registered version (name, name:N, ft: id, job id) or model folder "
        "(default: settings)",
    )
    p.add_argument("--task", default=None, help="task prompt, e.g. retrieval.query")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None)


def _load(name: str | None, precision: str | None = None):
    """The encoder for ``--model`` (the settings' default model when it is not given)."""
    from core.config import get_settings
    from embedding.inference.encoder import load_encoder
    from workers.serving.model_names import local_model_name

    settings = get_settings()
    if name is None:
        name = settings.default_model
    return load_encoder(local_model_name(name), device=settings.device, precision=precision)


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    texts = args.text if args.text else _read_jsonl_strings(sys.stdin)
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


def _read_jsonl_strings(stream: Iterable[str]) -> list[str]:
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
    from embedding.inference.encoder import similarity

    encoder = _load(args.model, args.precision)
    a, b = encoder.encode([args.a, args.b], task=args.task)
    print(f"{similarity(a, b):.6f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedding demo: load the default model, embed code snippets, show similarities."""
    import numpy as np

    from core.config import get_settings
    from embedding.inference.encoder import similarity_matrix

    name = args.model or get_settings().default_model
    encoder = _load(name)
    for report in encoder.load_reports:
        print(f"model {report.model}: {report.source} {report.path}")
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

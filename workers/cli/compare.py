"""``embedctl compare A B --data pairs.jsonl``: an A/B comparison of two models, locally.

Both models are named as ``embedctl embed --model`` names them (a spec, a registered
version, an ``ft:`` id, a job id or a folder). The comparison runs in this process, as
``embedctl eval`` does, and is recorded in ``evaluations`` (trigger ``cli``); the exit code
is 0 whatever the verdict (a verdict is a finding, not a failure).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from embedding.evaluation.compare import DEFAULT_RESAMPLES, MAX_RESAMPLES, MAX_SEED, MIN_RESAMPLES
from workers.cli.db import ensure_schema


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="A/B: MRR@10, recall@1, nDCG@10 of two models on pairs, B - A with a paired "
        "bootstrap 95%% CI, and a verdict",
    )
    names = "spec, registered version (name, name:N, ft: id, job id) or model folder"
    p.add_argument("a", metavar="A", help=f"model A: {names}")
    p.add_argument("b", metavar="B", help=f"model B: {names}")
    p.add_argument("--data", required=True, help="JSONL of {anchor, positive} (query, document)")
    p.add_argument(
        "--resamples",
        type=_bounded(MIN_RESAMPLES, MAX_RESAMPLES),
        default=DEFAULT_RESAMPLES,
        help=f"bootstrap resamples ({MIN_RESAMPLES}..{MAX_RESAMPLES}, default {DEFAULT_RESAMPLES})",
    )
    p.add_argument(
        "--seed", type=_bounded(0, MAX_SEED), default=0, help="bootstrap seed (default 0)"
    )
    p.add_argument(
        "--json", dest="json_path", default=None, help="write the evaluation as JSON to this file"
    )
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None)
    p.set_defaults(func=cmd_compare)


def _bounded(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def cmd_compare(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from embedding.inference.encoder import load_encoder
    from workers.jobs import evaluation_run
    from workers.reports.render import render_evaluation
    from workers.serving.model_names import local_model_name

    pairs = evaluation_run.pairs_from_file(args.data)  # validated before any model loads
    for name in (args.a, args.b):
        local_model_name(name)  # an unknown name is an error here, not a failed record
    ensure_schema()
    evaluation_id = evaluation_run.create(
        "cli", args.a, args.b, str(Path(args.data).resolve()), args.resamples, args.seed
    )
    loaded: dict[str, object] = {}

    def load(name: str) -> object:
        if name not in loaded:  # A and B the same model: loaded once
            loaded[name] = load_encoder(
                name, device=get_settings().device, precision=args.precision
            )
        return loaded[name]

    evaluation = evaluation_run.run(
        evaluation_id, lambda: pairs, resolve=local_model_name, load=load
    )
    print(render_evaluation(evaluation))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(evaluation, indent=2) + "\n")
    return 0

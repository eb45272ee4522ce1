"""``embedctl data codesearch`` and ``embedctl data mine-negatives``: build training data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from embedding.training.mining import OUTPUT_FORMATS, SAMPLING, MiningConfig

_MINING = MiningConfig()  # the defaults the options show


def add_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build training data")
    dsub = data.add_subparsers(dest="data_command", metavar="KIND", required=True)
    p = dsub.add_parser(
        "codesearch",
        help="doc -> code pairs from code in six languages, split by file",
        description="(Summary of a function's doc -> its code without the doc) pairs from "
        "Python, JavaScript, TypeScript, Go, Java and Rust; deduplicated, and split into "
        "train/eval by a stable hash of each file's path. Writes train.jsonl and eval.jsonl "
        "(what finetune --data / --eval-data read), their .meta.jsonl (language, source, "
        "file of each row) and report.json (counts per language and source, and what was "
        "skipped or dropped and why). See embedding/data/code_pairs/.",
    )
    p.add_argument(
        "--source",
        default="stdlib",
        help="comma-separated: 'stdlib', installed package names (sqlalchemy,celery) and "
        "folders (./repo, /src/app); a folder skips tests, vendored and generated code, "
        "virtualenvs, node_modules, what .gitignore ignores, and every symlink "
        "(default: stdlib)",
    )
    p.add_argument(
        "--eval-share",
        type=float,
        default=0.1,
        help="share of files (by path hash) whose pairs go to eval.jsonl (default: 0.1)",
    )
    p.add_argument("--out", required=True)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the whole report (report.json) as JSON instead of the summary",
    )
    p.set_defaults(func=cmd_codesearch)

    p = dsub.add_parser(
        "mine-negatives",
        help="pairs -> triplets: hard negatives mined with a base model",
        description="Add a hard negative to each (anchor, positive) pair: the corpus text the "
        "model scores highest for the anchor, never a positive of it, and (the false-negative "
        "guard) not scored within --margin of its positive. Triplets train with loss "
        "triplet or mnrl; n-tuples (several negatives in one row) with mnrl. See "
        "embedding/training/mining.py for each rule and why.",
    )
    p.add_argument("--data", required=True, help="JSONL of {anchor, positive} pairs")
    p.add_argument(
        "--out",
        required=True,
        help="JSONL of {anchor, positive, negative}, or {anchor, positive, negatives: [...]}",
    )
    p.add_argument("--model", default="minilm", help="the model that scores candidates")
    p.add_argument(
        "--corpus",
        default=None,
        help="JSONL of extra candidate texts, one JSON string a line (the positives always are candidates)",
    )
    add_mining_options(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print what the run did as one JSON object instead of the summary",
    )
    p.set_defaults(func=cmd_mine_negatives)


def add_mining_options(p: argparse.ArgumentParser, seed: bool = True) -> None:
    """:class:`MiningConfig`'s knobs as options, with its defaults; read back with
    :func:`mining_config`. ``benchmarks/recipes.py`` shares them (``seed=False``: it has a
    ``--seed`` of its own, for its data sample and order as well as the mining)."""
    p.add_argument(
        "--num-negatives",
        type=int,
        default=_MINING.num_negatives,
        help="negatives per pair: one output row each, or one n-tuple row with --format "
        f"n-tuple (default: {_MINING.num_negatives})",
    )
    p.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default=_MINING.output_format,
        help="triplet: a row per negative (more steps an epoch); n-tuple: a row per pair with "
        "every negative, which MNRL scores against every anchor of the batch "
        f"(default: {_MINING.output_format})",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=_MINING.top_k,
        help=f"pool of the hardest valid candidates to take them from (default: {_MINING.top_k})",
    )
    p.add_argument(
        "--margin",
        type=_optional_float,
        default=_MINING.margin,
        help="skip candidates scored above the positive's cosine minus this; 'none' turns the "
        f"guard off (default: {_MINING.margin})",
    )
    p.add_argument(
        "--max-score",
        type=_optional_float,
        default=_MINING.max_score,
        help="also skip candidates scored above this cosine (default: none)",
    )
    p.add_argument(
        "--sampling",
        choices=SAMPLING,
        default=_MINING.sampling,
        help="top: the hardest of the pool; random: drawn from it with --seed "
        f"(default: {_MINING.sampling})",
    )
    if seed:
        p.add_argument("--seed", type=int, default=_MINING.seed, help="seed of random sampling")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=_MINING.chunk_size,
        help=f"anchors scored at once; memory only (default: {_MINING.chunk_size})",
    )


def mining_config(args: argparse.Namespace) -> MiningConfig:
    """The :class:`MiningConfig` that :func:`add_mining_options`' options ask for."""
    return MiningConfig(
        num_negatives=args.num_negatives,
        top_k=args.top_k,
        margin=args.margin,
        max_score=args.max_score,
        sampling=args.sampling,
        seed=args.seed,
        chunk_size=args.chunk_size,
        output_format=args.format,
    )


def _optional_float(text: str) -> float | None:
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def cmd_codesearch(args: argparse.Namespace) -> int:
    from embedding.data.code_pairs import write_code_pairs

    report = write_code_pairs(Path(args.out), args.source, eval_share=args.eval_share)
    print(json.dumps(report) if args.json else codesearch_summary(report, args.out))
    return 0


def codesearch_summary(report: dict, out: str | Path) -> str:
    """``report.json`` for a person: pairs per language, files read and passed over, the
    time, and where the files went."""
    pairs, files = report["pairs"], report["files"]
    skipped = report.get("skipped", {})
    sources = ", ".join(s["label"] for s in report.get("sources", []))
    lines = [
        f"{pairs['train'] + pairs['eval']:,} pairs ({pairs['train']:,} train, "
        f"{pairs['eval']:,} eval) from {files['read']:,} files of {sources} "
        f"in {report.get('seconds', 0):.1f} s",
        "",
    ]
    by_language = report.get("by_language", {})
    width = max([len("language"), *(len(name) for name in by_language)])
    lines.append(f"  {'language':<{width}}  {'train':>7}  {'eval':>7}")
    for name, row in by_language.items():
        lines.append(f"  {name:<{width}}  {row['train']:>7,}  {row['eval']:>7,}")
    lines.append("")
    lines.append(f"skipped folders and files: {_counts(skipped) if skipped else 'none'}")
    dropped = {DROPPED_AS.get(k, k): n for k, n in report.get("dropped", {}).items()}
    if dropped:
        lines.append(f"dropped as duplicates: {_counts(dropped)}")
    without = report.get("functions_without_pair", {})
    if without:
        lines.append(f"functions without a pair: {_counts(without)}")
    if files.get("parse_errors"):
        lines.append(f"files that did not parse: {files['parse_errors']:,}")
    lines.append(
        f"wrote to {out}: train.jsonl and eval.jsonl (for finetune --data / --eval-data), "
        "their .meta.jsonl,"
    )
    lines.append("  and report.json (the whole report; --json prints it)")
    return "\n".join(lines)


DROPPED_AS = {
    "duplicate_pair": "same pair",
    "duplicate_query": "same query",
    "duplicate_code": "same code",
    "near_duplicate_code": "near-identical code",
}


def _counts(counts: dict[str, int]) -> str:
    """``{"tests": 3, "hidden": 1}`` -> ``4 (tests 3, hidden 1)``, largest first."""
    parts = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    detail = ", ".join(f"{name.replace('_', ' ')} {count:,}" for name, count in parts)
    return f"{sum(counts.values()):,} ({detail})"


def cmd_mine_negatives(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from embedding.data.examples import load_examples, load_texts, write_examples
    from embedding.inference.encoder import load_encoder
    from embedding.training.mining import check_pairs, mine_hard_negatives
    from workers.serving.model_names import local_model_name

    # Data, corpus and settings are checked before the model is loaded.
    rows = check_pairs(load_examples(args.data), where=f"{args.data} row")
    corpus = load_texts(args.corpus) if args.corpus else []
    config = mining_config(args)
    config.check()
    encoder = load_encoder(local_model_name(args.model))

    def progress(desc: str, total: int) -> tqdm:
        return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, leave=False)

    mined = mine_hard_negatives(rows, encoder, config, corpus=corpus, progress=progress)
    if not mined.triplets:
        enough = "a valid negative"
        if args.format == "n-tuple" and args.num_negatives > 1:
            enough = f"{args.num_negatives} valid negatives"
        raise ValueError(
            f"no pair of {args.data} has {enough} ({mined.stats.corpus} candidate texts): add "
            "texts with --corpus, or loosen --margin / --max-score; nothing written"
        )
    write_examples(args.out, mined.triplets)
    stats = {"out": str(args.out), **mined.stats.as_dict()}
    if args.json:
        print(json.dumps(stats))
    else:
        print(mining_summary(stats, args.format, args.num_negatives))
    return 0


def mining_summary(stats: dict, output_format: str, num_negatives: int) -> str:
    """What ``mine-negatives`` did, for a person (``--json`` prints ``stats`` itself)."""
    n_tuples = output_format == "n-tuple"
    rows = f"n-tuples, {num_negatives} negatives each," if n_tuples else "triplets"
    full = stats["anchors_mined"] - stats["anchors_short"]
    lines = [
        f"{stats['triplets']:,} {rows} from {stats['pairs']:,} pairs "
        f"({stats['anchors']:,} distinct anchors), negatives from {stats['corpus']:,} "
        "candidate texts",
        f"anchors with {num_negatives} negative{'s' if num_negatives > 1 else ''}: {full:,}"
        + (f", with fewer: {stats['anchors_short']:,}" if stats["anchors_short"] else ""),
    ]
    if stats["pairs_dropped"]:
        why = f"{stats['anchors_dropped']:,} anchors with no valid negative"
        if n_tuples and stats["anchors_short"]:
            why += f", {stats['anchors_short']:,} with fewer than {num_negatives}"
        lines.append(f"left out: {stats['pairs_dropped']:,} pairs ({why})")
    lines.append(
        f"false-negative guard: {stats['skipped_false_negatives']:,} candidates skipped; "
        f"{stats['anchors_guarded']:,} anchors lost their top-scoring candidate to it"
    )
    lines.append(
        f"mean cosine to the anchor: positive {stats['mean_positive_score']:.3f}, "
        f"negative {stats['mean_negative_score']:.3f}"
    )
    lines.append(f"wrote {stats['out']}")
    return "\n".join(lines)

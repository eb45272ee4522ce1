"""Two fine-tune recipes on held-out stdlib modules: plain MNRL, and MNRL with mined negatives.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/recipes.py [--n-train 400] [--epochs 1]
        [--batch-size 16] [--lr 2e-5] [--data DIR] [--json out.json]

Data: docstring -> code pairs from the stdlib (``embedding.data.codesearch``), split by module, so
the eval's modules are never trained on. ``--n-train`` training pairs are drawn with the seed
(not the first N, which would all be a few alphabetically early packages); the eval is every
held-out pair (or ``--n-eval`` of them).

Recipes, each from a fresh minilm with the same rows, order seed, epochs, batch and lr:

- **plain**: MNRL on the pairs (in-batch negatives only);
- **mined**: MNRL on the same pairs with one hard negative each, mined by the base model
  from the same pairs' positives (``embedding.training.mining``, its default false-negative guard).
  No eval text is ever a mining candidate.

It prints MRR@10 (and recall@1) on the held-out pairs before training and after each recipe,
each recipe's gain, and the ratio of the gains; issue 16's floor is mined gain >= 1.5x plain
gain. Times are wall clock, noisy on a shared machine, and not what this measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0], and its queue.py would shadow the stdlib's
# queue (torch imports it): put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedding.data.codesearch import build_pairs, stdlib_root
from embedding.data.examples import Example, load_examples
from embedding.inference.encoder import Encoder
from embedding.training import hyperparameters as hp
from embedding.training.config import TrainConfig, TrainResult
from embedding.training.loop import finetune
from embedding.training.mining import mine_hard_negatives
from workers.cli.data import add_mining_options, mining_config

MODEL = "minilm"
FLOOR = 1.5  # issue 16: mined gain >= 1.5x plain gain
METRIC = "mrr@10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=400, help="training pairs (default 400)")
    parser.add_argument("--n-eval", type=int, default=None, help="held-out pairs (default all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=hp.BATCH_SIZE.default)
    parser.add_argument("--lr", type=float, default=hp.LR.default)
    parser.add_argument("--seed", type=int, default=0, help="data sample, order and mining")
    parser.add_argument("--max-tokens", type=int, default=None, help="training token cap")
    add_mining_options(parser, seed=False)  # --seed above serves the mining too
    parser.add_argument(
        "--corpus",
        choices=("sample", "train"),
        default="sample",
        help="mining candidates: the sampled pairs' positives, or every training positive "
        "(never a held-out text either way)",
    )
    parser.add_argument(
        "--data", default=None, help="a folder from `embedctl data codesearch` (default: build)"
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    train, held_out = load_pairs(args.data)
    rng = random.Random(args.seed)
    if args.n_train > len(train):
        parser.error(f"--n-train {args.n_train}: only {len(train)} training pairs")
    rows = [train[i] for i in sorted(rng.sample(range(len(train)), args.n_train))]
    if args.n_eval is not None:
        held_out = [held_out[i] for i in sorted(rng.sample(range(len(held_out)), args.n_eval))]
    print(
        f"{MODEL}: {len(rows)} training pairs of {len(train)}, {len(held_out)} held-out pairs; "
        f"{args.epochs} epoch(s), batch {args.batch_size}, lr {args.lr:g}, seed {args.seed}"
    )

    started = time.perf_counter()
    base = Encoder.load(MODEL)
    config = mining_config(args)
    corpus = [positive for _, positive in train] if args.corpus == "train" else []
    mined = mine_hard_negatives(rows, base, config, corpus=corpus)
    del base
    mine_s = time.perf_counter() - started
    print(f"mined in {mine_s:.0f} s: {json.dumps(mined.stats.as_dict())}")

    train_config = TrainConfig(
        loss="mnrl",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_tokens=args.max_tokens,
    )
    results: dict[str, TrainResult] = {}
    for name, data in (("plain", rows), ("mined", mined.triplets)):
        print(f"training {name} ({len(data)} rows) ...", flush=True)
        results[name] = finetune(MODEL, data, train_config, eval_examples=held_out)

    before = results["plain"].eval_before
    print(f"\n{'recipe':<8} {'rows':>5} {'train s':>8}  {METRIC} per epoch")
    for name, result in results.items():
        curve = " ".join(f"{e.eval[METRIC]:.4f}" for e in result.epochs)
        print(f"{name:<8} {result.settings['rows']:>5} {result.seconds:>8.0f}  {curve}")

    print(f"\n{'':<8} {METRIC + ' before':>14} {'after':>8} {'gain':>8} {'recall@1 after':>15}")
    gains = {}
    for name, result in results.items():
        gains[name] = result.eval_after[METRIC] - result.eval_before[METRIC]
        print(
            f"{name:<8} {result.eval_before[METRIC]:>14.4f} {result.eval_after[METRIC]:>8.4f} "
            f"{gains[name]:>+8.4f} {result.eval_after['recall@1']:>15.4f}"
        )
    if gains["plain"] > 0:
        ratio: float | None = gains["mined"] / gains["plain"]
        verdict = "meets" if ratio >= FLOOR else "BELOW"
        print(f"\nratio mined/plain {METRIC} gain: {ratio:.2f}x ({verdict} the {FLOOR}x floor)")
    else:
        ratio = None
        print(f"\nratio mined/plain {METRIC} gain: n/a (plain gain {gains['plain']:+.4f} <= 0)")

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "settings": {**vars(args), "model": MODEL, "n_eval": len(held_out)},
                    "mining": mined.stats.as_dict(),
                    "mining_seconds": mine_s,
                    "before": before,
                    "after": {name: r.eval_after for name, r in results.items()},
                    "epochs": {name: [e.eval for e in r.epochs] for name, r in results.items()},
                    "train_seconds": {name: r.seconds for name, r in results.items()},
                    "gain": gains,
                    "ratio": ratio,
                    "floor": FLOOR,
                },
                indent=2,
            )
        )


def load_pairs(folder: str | None) -> tuple[list[Example], list[Example]]:
    """(train, held-out) pairs: a ``codesearch`` folder's files, or built from the stdlib."""
    if folder:
        return load_examples(Path(folder) / "train.jsonl"), load_examples(
            Path(folder) / "eval.jsonl"
        )
    train, held_out, _ = build_pairs(stdlib_root())
    return train, held_out


if __name__ == "__main__":
    main()
